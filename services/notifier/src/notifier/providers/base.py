"""The provider interface: send, look up after a crash, parse a delivery report, map a status.

Providers know nothing about the database: the dispatcher records every attempt before `send` and the
outcome after it. `lookup` is what makes a restart safe: for an attempt whose outcome was never
recorded, the provider says whether it has the message (then it is not sent again).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from contracts.sms import SmsEncoding
from notifier.domain import FailureKind, ReceiptStatus


@dataclass(frozen=True)
class OutgoingSms:
    idempotency_key: str  # the SendSms id: the provider's idempotency key where it has one
    message_id: str
    phone: str
    text: str
    sender: str | None
    encoding: SmsEncoding
    segments: int


@dataclass(frozen=True)
class Accepted:
    """The provider took the message. One id per segment where the provider gives one (SMPP), else one."""

    provider_message_ids: tuple[str, ...]
    per_segment: bool = False


class ProviderFailure(Exception):
    """The provider did not take the message; `kind` says whether trying again can help."""

    def __init__(self, kind: FailureKind, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s


class OutcomeUnknown(Exception):
    """The provider cannot tell whether it received a message (it has no lookup)."""


@dataclass(frozen=True)
class DeliveryReport:
    provider_message_id: str
    status: ReceiptStatus
    raw_status: str
    segment: int | None = None  # None: the provider does not say; the part's own segment or the whole message
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class InboundSms:
    phone: str
    text: str


ReportSink = Callable[[Sequence[DeliveryReport]], Awaitable[None]]
InboundSink = Callable[[InboundSms], Awaitable[None]]


class Provider(ABC):
    name: str
    # True when sending again with the same idempotency key cannot reach the handset twice.
    resend_is_safe: bool = False

    async def start(self, on_reports: ReportSink, on_inbound: InboundSink) -> None:  # noqa: B027 - optional hook
        """Connect; providers that push reports or inbound messages (SMPP, console) call the sinks."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; in-flight sends are the dispatcher's business."""

    @abstractmethod
    async def send(self, sms: OutgoingSms) -> Accepted:
        """Hand the message over; raises ProviderFailure when it was not taken."""

    async def lookup(self, sms: OutgoingSms) -> Accepted | None:
        """After a crash: the provider's record of `sms` (None: it never got it); OutcomeUnknown: cannot tell."""
        raise OutcomeUnknown(f"{self.name} has no lookup")

    @abstractmethod
    def map_status(self, raw: str) -> ReceiptStatus:
        """The provider's delivery status in our vocabulary; ValueError for one we do not know."""
