"""The SMS command (campaigns -> notifier) and the notifier's outcome events.

Consume-and-produce is not atomic here, so a campaign may emit the same `SendSms` twice after a crash; its id
is therefore deterministic, ``send_sms_id(campaign_id, triggering_event_id)``, used as both the envelope
`id` and `idempotency_key`, and the notifier sends at most one SMS per id.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self
from uuid import UUID, uuid5

from pydantic import Field, StringConstraints, model_validator

from contracts.base import Contract
from contracts.primitives import E164Phone, Identifier, PartnerId, Slug, UtcDatetime
from contracts.topics import Topic, sms_key

SEND_SMS_NAMESPACE = UUID("b52053fb-a0fb-46c3-bf29-f3fbc30a3735")
"""The uuid5 namespace of `send_sms_id`: a random UUID drawn once for this project. Never change it: every
command id would change, and commands re-emitted across the deploy would no longer be de-duplicated."""


def send_sms_id(campaign_id: str, triggering_event_id: str) -> str:
    """The deterministic id of the SMS a campaign sends because of one event.

    ``uuid5(SEND_SMS_NAMESPACE, campaign_id + "\\n" + triggering_event_id)`` as a lowercase hyphenated string.
    """
    return str(uuid5(SEND_SMS_NAMESPACE, f"{campaign_id}\n{triggering_event_id}"))


SenderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._+-]{1,15}$")]


class SendSms(Contract):
    """Command: send `text` to `phone`. The envelope id equals `idempotency_key`."""

    EVENT_TYPE = "sms.send-requested.v1"
    TOPIC = Topic.SEND_SMS

    idempotency_key: Identifier = Field(description="send_sms_id(campaign_id, triggering event id)")
    partner_id: PartnerId
    campaign_id: Identifier
    order_id: Identifier
    customer_id: Identifier
    phone: E164Phone
    text: Annotated[str, StringConstraints(min_length=1, max_length=1600)] = Field(description="The rendered message.")
    sender: SenderId | None = Field(default=None, description="Alphanumeric sender id; null: the default.")
    requested_at: UtcDatetime
    expires_at: UtcDatetime = Field(description="Not sent after this instant (reported as failed: expired).")
    not_before: UtcDatetime | None = Field(default=None, description="Quiet hours: not sent before this.")
    transactional: bool = Field(
        default=False,
        description="A service message about the order: sent without marketing consent (sms_consent), never to a "
        "number on the partner's opt-out ledger.",
    )
    sms_consent: bool | None = Field(
        default=None,
        description="The customer's consent to marketing SMS (the order snapshot's customer.sms_consent). "
        "null: not stated (a sender older than this field); the notifier then sends no marketing SMS "
        "(fails safe: SmsFailed no_consent). Ignored for transactional messages.",
    )
    is_test: bool = Field(
        default=False,
        description="A marketer's test send from the console (the notifier's POST /v1/messages/test): sent like any "
        "SMS, but never counted in a campaign's stats, frequency caps or analytics.",
    )

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        if self.expires_at <= self.requested_at:
            raise ValueError("expires_at must be after requested_at")
        if self.not_before is not None and self.not_before >= self.expires_at:
            raise ValueError("not_before must be before expires_at")
        return self

    def record_key(self, partner_id: str) -> bytes:
        return sms_key(self.partner_id, self.phone)

    def event_subject(self) -> str | None:
        return self.order_id

    def owner_partner_id(self) -> str | None:
        return self.partner_id


class SmsEncoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


class SmsFailureReason(StrEnum):
    """Failure codes the notifier uses today; `SmsFailed.reason` is a plain code so that new ones stay
    compatible: readers must treat an unknown code as a generic failure."""

    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"  # a marketing SMS without the customer's consent (or with it not stated)
    INVALID_PHONE = "invalid_phone"
    EXPIRED = "expired"
    PROVIDER_REJECTED = "provider_rejected"
    PROVIDER_ERROR = "provider_error"
    UNDELIVERABLE = "undeliverable"


class _SmsEvent(Contract):
    TOPIC = Topic.SMS_EVENTS

    message_id: Identifier = Field(description="The notifier's message id.")
    send_sms_id: Identifier = Field(description="The id of the SendSms command (its idempotency key).")
    partner_id: PartnerId
    campaign_id: Identifier
    order_id: Identifier
    phone: E164Phone
    occurred_at: UtcDatetime
    is_test: bool = Field(
        default=False,
        description="The outcome of a marketer's test send: consumers must not count it in a campaign's stats, "
        "frequency caps or analytics.",
    )

    def record_key(self, partner_id: str) -> bytes:
        return sms_key(self.partner_id, self.phone)

    def event_subject(self) -> str | None:
        return self.message_id

    def owner_partner_id(self) -> str | None:
        return self.partner_id


class SmsDispatched(_SmsEvent):
    """The provider accepted the message."""

    EVENT_TYPE = "sms.dispatched.v1"

    provider: Slug
    provider_message_id: Identifier | None = None
    segments: int = Field(ge=1)
    encoding: SmsEncoding


class SmsFailed(_SmsEvent):
    """The notifier gave up on the message (final)."""

    EVENT_TYPE = "sms.failed.v1"

    provider: Slug | None = Field(default=None, description="null: failed before reaching a provider.")
    provider_message_id: Identifier | None = None
    reason: Slug = Field(description="A failure code, see SmsFailureReason; unknown codes are generic failures.")
    message: Annotated[str, StringConstraints(max_length=1000)] = Field(description="Human-readable detail.")
    attempts: int = Field(ge=0, description="Provider attempts made (0: rejected before sending).")


class SmsDelivered(_SmsEvent):
    """The provider's delivery report says the message reached the handset."""

    EVENT_TYPE = "sms.delivered.v1"

    provider: Slug
    provider_message_id: Identifier | None = None
