"""The service's Kafka consumers: status changes to evaluate, and the notifier's reports for the stats.

Both are at-least-once batch consumers (`servicekit.consumer`): offsets are committed after the work
committed, and the work is idempotent (unique evaluation per (campaign, event); one SMS outcome per
(command, kind)).

A record that is not a valid contract goes to the consumer's own dead-letter topic
(`orders.status-changed.v1.campaigns.dlq`, `notifier.sms-events.v1.campaigns.dlq`) with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from campaigns.services import Evaluator, SmsEvent, record_sms_events
from campaigns.settings import CampaignsSettings
from contracts.envelope import Envelope, decode, decode_any
from contracts.orders import OrderStatusChanged
from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from contracts.topics import Topic
from servicekit.consumer import DeadLetters, Process, Record, batch_subscriber, decode_batch

log = logging.getLogger(__name__)

SMS_EVENT_TYPES = (SmsDispatched, SmsFailed, SmsDelivered)


def _status_changed(record: Record) -> Envelope[OrderStatusChanged]:
    return decode(record.value or b"", OrderStatusChanged)


def _sms_event(record: Record) -> SmsEvent:
    data = decode_any(record.value or b"", SMS_EVENT_TYPES).data
    assert isinstance(data, SmsDispatched | SmsFailed | SmsDelivered)
    return data


def status_changes_processor(evaluator: Evaluator, dead_letters: DeadLetters) -> Process:
    async def process(records: Sequence[Record]) -> None:
        await evaluator.wait_for_current_index()  # first: a batch retried later dead-letters nothing twice
        envelopes, rejected = decode_batch(records, _status_changed)
        await dead_letters.publish(rejected)
        await evaluator.handle_batch([(envelope, record.headers) for record, envelope in envelopes])

    return process


def sms_events_processor(pool: asyncpg.Pool, dead_letters: DeadLetters) -> Process:
    async def process(records: Sequence[Record]) -> None:
        decoded, rejected = decode_batch(records, _sms_event)
        await dead_letters.publish(rejected)
        if decoded:
            await record_sms_events(pool, [event for _, event in decoded])

    return process


def subscribe(
    broker: KafkaBroker, settings: CampaignsSettings, evaluator: Evaluator, producer: AIOKafkaProducer
) -> None:
    """Register both consumers on the service's broker (started after this, by servicekit.app)."""
    changes = DeadLetters(producer, settings.topic(Topic.ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ), settings.consumer_group)
    batch_subscriber(
        broker,
        settings.topic_status_changed,
        settings.consumer_group,
        status_changes_processor(evaluator, changes),
        changes,
        max_records=settings.consumer_max_records,
        batching=settings.batching,
    )
    reports = DeadLetters(producer, settings.topic(Topic.SMS_EVENTS_CAMPAIGNS_DLQ), settings.sms_events_consumer_group)
    batch_subscriber(
        broker,
        settings.topic_sms_events,
        settings.sms_events_consumer_group,
        sms_events_processor(evaluator.pool, reports),
        reports,
        max_records=settings.consumer_max_records,
        batching=settings.batching,
    )
