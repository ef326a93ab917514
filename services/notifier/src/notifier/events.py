"""The notifier's outbox records: SmsDispatched, SmsFailed, SmsDelivered, and a given-up command's dead letter.

Event ids are uuid5s of the message and the event type (and the replay round), so recording an outcome twice
can only ever write the same event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Envelope
from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed, SmsFailureReason
from contracts.topics import sms_key
from notifier.domain import Message
from notifier.repository import Claimed
from servicekit.consumer import Rejected, dead_letter_headers
from servicekit.outbox import OutboxRecord, record_for

SOURCE = "/services/notifier"
MESSAGE_NAMESPACE = uuid.UUID("6f1d8f0e-3b0a-4c55-9a57-2f6c2f3f8b11")
"""uuid5 namespace of message ids (and event ids): the same command always becomes the same message."""


def message_id_of(partner_id: str, send_sms_id: str) -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{partner_id}\n{send_sms_id}"))


@dataclass(frozen=True)
class Topics:
    sms_events: str
    send_sms: str
    send_sms_dlq: str
    consumer_group: str


@dataclass(frozen=True)
class Events:
    """Builds the outbox records of a message's outcomes; event ids are deterministic per message and type."""

    topics: Topics

    def _record(self, message: Message, correlation_id: str | None, data: Any) -> OutboxRecord:
        # A replay's round is a new story: its SmsFailed is not the first round's (consumers de-duplicate by id).
        name = f"{message.message_id}\n{data.EVENT_TYPE}"
        if message.replay_round:
            name += f"\nreplay {message.replay_round}"
        envelope = Envelope.wrap(
            data,
            source=SOURCE,
            partner_id=message.partner_id,
            event_id=str(uuid.uuid5(MESSAGE_NAMESPACE, name)),
            causation_id=message.send_sms_id,
            correlation_id=correlation_id or message.send_sms_id,
        )
        return record_for(envelope, self.topics.sms_events, sms_key(message.partner_id, message.phone))

    def _common(self, message: Message) -> dict[str, Any]:
        return {
            "message_id": message.message_id,
            "send_sms_id": message.send_sms_id,
            "partner_id": message.partner_id,
            "campaign_id": message.campaign_id,
            "order_id": message.order_id,
            "phone": message.phone,
            "occurred_at": datetime.now(UTC),
            "is_test": message.is_test,  # so that no campaign counts a test send's outcome
        }

    def dispatched(self, message: Message, correlation_id: str | None, provider: str, pid: str) -> OutboxRecord:
        data = SmsDispatched(
            **self._common(message),
            provider=provider,
            provider_message_id=pid,
            segments=message.segments,
            encoding=message.encoding,
        )
        return self._record(message, correlation_id, data)

    def failed(
        self,
        message: Message,
        correlation_id: str | None,
        reason: SmsFailureReason,
        detail: str,
        *,
        provider: str | None = None,
        pid: str | None = None,
        attempts: int = 0,
    ) -> OutboxRecord:
        data = SmsFailed(
            **self._common(message),
            provider=provider,
            provider_message_id=pid,
            reason=str(reason),
            message=detail[:1000],
            attempts=attempts,
        )
        return self._record(message, correlation_id, data)

    def delivered(self, message: Message, correlation_id: str | None, provider: str, pid: str | None) -> OutboxRecord:
        data = SmsDelivered(**self._common(message), provider=provider, provider_message_id=pid)
        return self._record(message, correlation_id, data)

    def dead_letter(self, claimed: Claimed, reason: str, detail: str) -> OutboxRecord:
        """The original command on the DLQ, with the same headers the consumer plumbing writes."""
        original = _StoredRecord(
            topic=claimed.command_topic or self.topics.send_sms,
            partition=claimed.command_partition if claimed.command_partition is not None else -1,
            offset=claimed.command_offset if claimed.command_offset is not None else -1,
            key=sms_key(claimed.message.partner_id, claimed.message.phone),
            value=claimed.command,
            headers=(),
        )
        headers = dead_letter_headers(Rejected(original, reason, detail), self.topics.consumer_group)
        return OutboxRecord(
            topic=self.topics.send_sms_dlq,
            key=original.key,
            payload=claimed.command,
            headers={k: v.decode() for k, v in headers},
        )


@dataclass(frozen=True)
class _StoredRecord:
    """The fields of a consumed record that `dead_letter_headers` reads, rebuilt from the message row."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
