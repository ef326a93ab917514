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
from webhooks.domain import Clock
from webhooks.services import fan_out
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
        envelopes, rejected = decode_batch(records, read)
        await dead_letters.publish(rejected)
        if await fan_out(pool, consumer, [envelope for _, envelope in envelopes], clock):
            made()

    return process


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
