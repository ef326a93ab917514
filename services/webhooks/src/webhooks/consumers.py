"""The service's Kafka consumers: every platform event a webhook can report becomes one message per enabled endpoint
that wants it.

Three at-least-once batch consumers (`servicekit.consumer`), one per topic: status changes, SMS outcomes and
status definitions. Each claims its events in `processed_events` in the transaction that writes their messages, so a
redelivered event makes no second message; offsets are committed after that transaction. A record that is not a valid
contract goes to the consumer's own dead-letter topic (`<topic>.webhooks.dlq`) with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from contracts.base import Contract
from contracts.envelope import Envelope
from contracts.registry import parse_event
from contracts.topics import Topic
from contracts.webhooks import WEBHOOK_SOURCES
from servicekit.consumer import DeadLetters, Process, Record, batch_subscriber, decode_batch
from servicekit.ops import headers
from webhooks.domain import Clock
from webhooks.services import fan_out, subscribers_of
from webhooks.settings import WebhooksSettings


@dataclass(frozen=True)
class Source:
    topic: Topic
    dead_letters: Topic
    title: str

    def group(self, settings: WebhooksSettings) -> str:
        """A consumer group per topic, so that one topic's rebalances never pause another's."""
        return f"{settings.consumer_group}-{self.title.removeprefix('webhooks.')}"


SOURCES = (
    Source(Topic.ORDER_STATUS_CHANGED, Topic.ORDER_STATUS_CHANGED_WEBHOOKS_DLQ, "webhooks.status-changes"),
    Source(Topic.SMS_EVENTS, Topic.SMS_EVENTS_WEBHOOKS_DLQ, "webhooks.sms-events"),
    Source(Topic.STATUS_DEFINITIONS, Topic.STATUS_DEFINITIONS_WEBHOOKS_DLQ, "webhooks.status-definitions"),
)


def _reader(topic: Topic) -> Callable[[Record], Envelope[Contract]]:
    accepted = tuple(contract for contract in WEBHOOK_SOURCES if topic == contract.TOPIC)

    def read(record: Record) -> Envelope[Contract]:
        return parse_event(record.value or b"", accept=accepted)

    return read


def events_processor(
    pool: asyncpg.Pool, source: Source, dead_letters: DeadLetters, clock: Clock, made: Callable[[], None]
) -> Process:
    read = _reader(source.topic)
    consumer = f"webhooks:{source.topic}"

    async def process(records: Sequence[Record]) -> None:
        named = [(record, partner_named(record)) for record in records]
        partners = {partner for _, partner in named if partner is not None}
        subscribers = None
        if partners and all(partner is not None for _, partner in named):
            # Every record names its partner in its `partnerid` header (the outbox writes the envelope's): only the
            # records of partners with an endpoint are read. Most partners have none, and parsing every event of
            # the platform was most of what this service cost (docs/performance.md, issue 34). A record left unread
            # is not judged here either: the topic's other consumers dead-letter what no contract reads.
            subscribers = await subscribers_of(pool, partners)
            wanted = {subscriber.partner_id for subscriber in subscribers}
            records = [record for record, partner in named if partner in wanted]
        envelopes, rejected = decode_batch(records, read)
        await dead_letters.publish(rejected)
        events = [envelope for _, envelope in envelopes]
        if subscribers is not None and not {event.partnerid for event in events} <= partners:
            subscribers = None  # an envelope of another partner than its header names: fan_out reads its endpoints
        if await fan_out(pool, consumer, events, clock, subscribers):
            made()

    return process


def partner_named(record: Record) -> str | None:
    """The partner a record's `partnerid` header names (None: no such header)."""
    return headers(record).get("partnerid")


def subscribe(
    broker: KafkaBroker,
    settings: WebhooksSettings,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    clock: Clock,
    made: Callable[[], None],
) -> None:
    """Register the three consumers on the service's broker (started after this, by servicekit.app); `made` is
    called when a batch made messages (the dispatcher then looks at once)."""
    for source in SOURCES:
        group = source.group(settings)
        dead_letters = DeadLetters(producer, settings.topic(source.dead_letters), group)
        batch_subscriber(
            broker,
            settings.topic(source.topic),
            group,
            events_processor(pool, source, dead_letters, clock, made),
            dead_letters,
            max_records=settings.consumer_max_records,
            batching=settings.batching,
            title=source.title,
        )
