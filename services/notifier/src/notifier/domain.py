"""SMS rules, free of I/O: phone checks, encoding and segments, status progression, receipts, retries.

A message's status only ever moves forward (`advance`): delivery reports arrive late, twice and out of
order, and a late "sent" must never undo a "delivered". A long message is several segments, each with
its own receipt at the provider; `merge_receipts` folds them into one message status.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import phonenumbers
from phonenumbers import PhoneNumberType
from pydantic import BaseModel, Field

from contracts.sms import SmsEncoding, SmsFailureReason

# GSM 03.38: the basic table (one septet each) in code order, and the extension table (escape + septet).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40}
GSM7_EXTENSION["€"] = 0x65
GSM7_ESCAPE = 0x1B
_GSM7_CODES = {char: code for code, char in enumerate(GSM7_BASIC) if code != GSM7_ESCAPE}

# Units per message: septets for GSM-7, UTF-16 code units for UCS-2; a concatenated segment loses
# room to its 6-byte UDH (7 septets, 3 code units).
SINGLE_LIMIT = {SmsEncoding.GSM7: 160, SmsEncoding.UCS2: 70}
SEGMENT_LIMIT = {SmsEncoding.GSM7: 153, SmsEncoding.UCS2: 67}

MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
STOP_WORDS = frozenset({"STOP", "СТОП", "ОТПИСКА", "UNSUBSCRIBE", "ОТПИСАТЬСЯ"})


class InvalidPhone(ValueError):
    """The number cannot receive an SMS; the message says why."""


def normalized_mobile(phone: str) -> str:
    """The E.164 form of a valid mobile number; raises InvalidPhone otherwise."""
    normalized, problem = _mobile(phone)
    if problem is not None:
        raise InvalidPhone(problem)
    return normalized


@functools.lru_cache(maxsize=100_000)
def _mobile(phone: str) -> tuple[str, str | None]:
    """(E.164, None) or ("", why not). Cached: the same numbers come back, and parsing one is not cheap."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException as exc:
        return "", f"{phone!r} is not a phone number: {exc}"
    if not phonenumbers.is_valid_number(parsed):
        return "", f"{phone} is not a valid number"
    if phonenumbers.number_type(parsed) not in MOBILE_TYPES:
        return "", f"{phone} is not a mobile number"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def is_gsm7(text: str) -> bool:
    return all(char in _GSM7_CODES or char in GSM7_EXTENSION for char in text)


def encoding_of(text: str) -> SmsEncoding:
    return SmsEncoding.GSM7 if is_gsm7(text) else SmsEncoding.UCS2


def _units(text: str, encoding: SmsEncoding) -> list[int]:
    """The size of each character in the encoding's units, so a split never cuts one in half."""
    if encoding is SmsEncoding.GSM7:
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]  # astral characters are surrogate pairs


def split_segments(text: str, encoding: SmsEncoding | None = None) -> list[str]:
    """The text of each segment, as a handset reassembles it (160/153 septets, 70/67 UCS-2 units)."""
    encoding = encoding or encoding_of(text)
    units = _units(text, encoding)
    if sum(units) <= SINGLE_LIMIT[encoding]:
        return [text]
    limit = SEGMENT_LIMIT[encoding]
    parts: list[str] = []
    start, used = 0, 0
    for index, size in enumerate(units):
        if used + size > limit:
            parts.append(text[start:index])
            start, used = index, 0
        used += size
    parts.append(text[start:])
    return parts


def segment_count(text: str, encoding: SmsEncoding | None = None) -> int:
    return len(split_segments(text, encoding))


def gsm7_bytes(text: str) -> bytes:
    """Unpacked GSM 03.38 septets (one per byte), as SMPP's default alphabet (data_coding 0) carries them."""
    out = bytearray()
    for char in text:
        if char in GSM7_EXTENSION:
            out += bytes((GSM7_ESCAPE, GSM7_EXTENSION[char]))
        else:
            out.append(_GSM7_CODES[char])
    return bytes(out)


def gsm7_text(data: bytes) -> str:
    """Decode unpacked GSM 03.38 septets (an inbound SMPP message in the default alphabet)."""
    extension = {code: char for char, code in GSM7_EXTENSION.items()}
    out, escaped = [], False
    for byte in data:
        if escaped:
            out.append(extension.get(byte, " "))
            escaped = False
        elif byte == GSM7_ESCAPE:
            escaped = True
        elif byte < len(GSM7_BASIC):
            out.append(GSM7_BASIC[byte])
    return "".join(out)


def encode_segment(text: str, encoding: SmsEncoding) -> bytes:
    return gsm7_bytes(text) if encoding is SmsEncoding.GSM7 else text.encode("utf-16-be")


def is_stop_request(text: str) -> bool:
    """An inbound reply that asks to stop: a stop word alone, in any case, with punctuation around it."""
    return text.strip(" \t\r\n.!,;:-").upper() in STOP_WORDS


class MessageStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for not_before (quiet hours)
    PENDING = "pending"  # due now, or waiting for its next retry
    SENDING = "sending"  # an attempt is recorded and the provider is being called
    DISPATCHED = "dispatched"  # the provider accepted it
    DELIVERED = "delivered"  # final: every segment reached the handset
    FAILED = "failed"  # final: rejected before sending, given up, or undeliverable
    EXPIRED = "expired"  # final: expires_at passed before it could be sent


RANK = {
    MessageStatus.SCHEDULED: 0,
    MessageStatus.PENDING: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.DISPATCHED: 3,
    MessageStatus.DELIVERED: 4,
    MessageStatus.FAILED: 4,
    MessageStatus.EXPIRED: 4,
}
FINAL = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.EXPIRED})


def advance(current: MessageStatus, reported: MessageStatus) -> MessageStatus:
    """The status after a report: forward moves only; a final status never changes.

    The one backward step the service takes itself (SENDING -> PENDING for a retry) goes through
    `RetryPolicy`, never through a report.
    """
    if current in FINAL or RANK[reported] <= RANK[current]:
        return current
    return reported


class ReceiptStatus(StrEnum):
    """What a provider's delivery report says about one segment, in the provider-neutral vocabulary."""

    ACCEPTED = "accepted"  # queued, en route, sent to the network
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"  # final failure: rejected, expired at the SMSC, unknown number


RECEIPT_RANK = {ReceiptStatus.ACCEPTED: 0, ReceiptStatus.DELIVERED: 1, ReceiptStatus.UNDELIVERABLE: 1}


def advance_receipt(current: ReceiptStatus | None, reported: ReceiptStatus) -> ReceiptStatus:
    """A segment's receipt, like a message, never moves backwards and never changes once final."""
    if current is None:
        return reported
    return reported if RECEIPT_RANK[reported] > RECEIPT_RANK[current] else current


WHOLE_MESSAGE = -1
"""The segment key of a receipt about the whole message (a provider that reports per message, not per part)."""


def merge_receipts(segments: int, receipts: Mapping[int, ReceiptStatus]) -> MessageStatus | None:
    """The message status the receipts (segment index -> status) add up to; None while nothing is final.

    Delivered when a whole-message receipt says so or every segment's does; failed as soon as one
    segment is undeliverable (the handset cannot show a message with a missing part).
    """
    if ReceiptStatus.UNDELIVERABLE in receipts.values():
        return MessageStatus.FAILED
    if receipts.get(WHOLE_MESSAGE) is ReceiptStatus.DELIVERED:
        return MessageStatus.DELIVERED
    if all(receipts.get(segment) is ReceiptStatus.DELIVERED for segment in range(segments)):
        return MessageStatus.DELIVERED
    return None


@dataclass(frozen=True)
class Intake:
    """What happens to a new command before any provider sees it."""

    status: MessageStatus
    due_at: datetime | None = None
    failure: SmsFailureReason | None = None
    detail: str = ""


def intake(
    *,
    phone: str,
    expires_at: datetime,
    not_before: datetime | None,
    opted_out: bool,
    transactional: bool,
    sms_consent: bool | None,
    now: datetime,
) -> Intake:
    """Decide a new command: refused (invalid phone, opted out, no consent), expired, scheduled or due now.

    The consent rule, whatever the campaign asked for: a number on the partner's opt-out ledger receives
    nothing (a STOP means stop, and a campaign's `transactional` flag cannot override the customer); a
    marketing (non-transactional) SMS also needs the customer's consent, and a command that does not state it
    (`sms_consent` null: an older sender) is refused as well: fail safe. Transactional messages (service
    messages about the order) need no marketing consent.
    """
    try:
        normalized_mobile(phone)
    except InvalidPhone as exc:
        return Intake(MessageStatus.FAILED, failure=SmsFailureReason.INVALID_PHONE, detail=str(exc))
    if opted_out:
        return Intake(MessageStatus.FAILED, failure=SmsFailureReason.OPTED_OUT, detail=f"{phone} opted out")
    if not transactional and sms_consent is not True:
        return Intake(MessageStatus.FAILED, failure=SmsFailureReason.NO_CONSENT, detail=_no_consent(sms_consent))
    if now >= expires_at:
        return Intake(MessageStatus.EXPIRED, failure=SmsFailureReason.EXPIRED, detail=f"expired at {expires_at}")
    if not_before is not None and not_before > now:
        return Intake(MessageStatus.SCHEDULED, due_at=not_before)
    return Intake(MessageStatus.PENDING, due_at=now)


def _no_consent(sms_consent: bool | None) -> str:
    if sms_consent is None:
        return "a marketing SMS whose command does not state the customer's consent (sms_consent absent): not sent"
    return "a marketing SMS to a customer without SMS consent: not sent"


class ReplayRefusal(StrEnum):
    """Why a replayed command starts no new round (besides the intake's own reasons: opted_out, no_consent...)."""

    DELIVERED = "delivered"  # it reached the handset
    DISPATCHED = "dispatched"  # a provider took it (even if a receipt later said undeliverable): no second SMS
    EXPIRED = "expired"  # past expires_at: too late to be worth sending
    IN_PROGRESS = "in_progress"  # scheduled, pending or sending: it is still on its way


@dataclass(frozen=True)
class ReplayDecision:
    """A new round (`start`: pending or scheduled), or the reason it was refused."""

    start: Intake | None
    refused: str | None = None
    detail: str = ""


def replay(*, status: MessageStatus, dispatched_before: bool, again: Intake) -> ReplayDecision:
    """What a command replayed from the dead-letter topic does to its existing message.

    `again` is the intake decision about the command now (phone, today's opt-out ledger, consent, expiry,
    not_before). Only a message that failed without any provider taking it is tried again, and only if the
    command would be accepted today: a refusal that no longer holds (the number opted back in) no longer holds.
    """
    if status is MessageStatus.DELIVERED:
        return ReplayDecision(None, ReplayRefusal.DELIVERED, "the message was delivered")
    if status is MessageStatus.DISPATCHED or dispatched_before:
        return ReplayDecision(None, ReplayRefusal.DISPATCHED, "a provider took the message already")
    if status is MessageStatus.EXPIRED or again.status is MessageStatus.EXPIRED:
        return ReplayDecision(None, ReplayRefusal.EXPIRED, again.detail or "the message expired")
    if status is not MessageStatus.FAILED:
        return ReplayDecision(None, ReplayRefusal.IN_PROGRESS, f"the message is {status}, still on its way")
    if again.failure is not None:
        return ReplayDecision(None, str(again.failure), again.detail)
    return ReplayDecision(again)


def replay_key(send_sms_id: str, replay_round: int) -> str:
    """The provider's idempotency key of a round: the SendSms id, and after the n-th replay `<id>.replay-<n>`,
    so the provider tells a new round from the old one while a resend within a round stays one SMS."""
    return send_sms_id if replay_round == 0 else f"{send_sms_id}.replay-{replay_round}"


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # try again later: 5xx, timeouts, 429, throttling, connection lost
    PERMANENT = "permanent"  # the provider refused this message: retrying cannot help


@dataclass(frozen=True)
class Retry:
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: SmsFailureReason
    detail: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring the provider's Retry-After."""

    max_attempts: int = 5
    base_s: float = 1.0
    max_s: float = 300.0

    def delay(self, attempt: int, retry_after_s: float | None, rand: Callable[[], float] = random.random) -> float:
        # Full jitter spreads retries of messages that failed together, so they do not come back as a herd.
        backoff: float = rand() * min(self.max_s, self.base_s * 2.0 ** (attempt - 1))
        return max(backoff, retry_after_s or 0.0)

    def decide(
        self,
        *,
        attempt: int,
        kind: FailureKind,
        detail: str,
        retry_after_s: float | None,
        now: datetime,
        expires_at: datetime,
        rand: Callable[[], float] = random.random,
    ) -> Retry | GiveUp:
        """After failed attempt number `attempt` (1-based): when to try again, or why not."""
        if kind is FailureKind.PERMANENT:
            return GiveUp(SmsFailureReason.PROVIDER_REJECTED, detail)
        if attempt >= self.max_attempts:
            return GiveUp(SmsFailureReason.PROVIDER_ERROR, f"gave up after {attempt} attempts: {detail}")
        at = now + timedelta(seconds=self.delay(attempt, retry_after_s, rand))
        if at >= expires_at:
            return GiveUp(SmsFailureReason.EXPIRED, f"the next attempt would be after expires_at: {detail}")
        return Retry(at)


class Message(BaseModel):
    """A message as the API shows it."""

    message_id: str
    send_sms_id: str
    partner_id: str
    campaign_id: str
    order_id: str
    customer_id: str
    phone: str
    text: str
    sender: str | None
    transactional: bool
    encoding: SmsEncoding
    segments: int
    status: MessageStatus
    failure_reason: str | None
    failure_detail: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    replay_round: int = Field(default=0, description="0: the first round; n: after the n-th accepted replay")
    requested_at: datetime
    expires_at: datetime
    not_before: datetime | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    is_test: bool = Field(default=False, description="A marketer's test send (POST /v1/messages/test)")


class Attempt(BaseModel):
    attempt: int
    provider: str
    status: str
    detail: str | None
    provider_message_ids: list[str] | None
    started_at: datetime
    finished_at: datetime | None


class Receipt(BaseModel):
    provider: str
    provider_message_id: str
    segment: int = Field(description="-1: a receipt about the whole message")
    status: ReceiptStatus
    raw_status: str
    occurred_at: datetime | None
    received_at: datetime
    updated_at: datetime


class ReplayRecord(BaseModel):
    """A replay of the message's dead letter: whether it started a new round, or why not."""

    replay_of: str = Field(description="The dead letter replayed: <dlq topic>/<partition>/<offset>")
    outcome: str = Field(description="accepted or refused")
    reason: str | None
    detail: str | None
    replayed_at: datetime


class OptOut(BaseModel):
    phone: str
    source: str
    created_at: datetime


TEST_SEND_WINDOW = timedelta(hours=1)


def wait_before_test_send(earlier: list[datetime], *, per_hour: int, now: datetime) -> timedelta | None:
    """How long one person must wait before another test send, or None when they may send now.

    `earlier`: when their test sends of the last hour were made, oldest first. The window slides: once the oldest
    of the last `per_hour` sends is an hour old, a send is free again.
    """
    recent = [at for at in earlier if at > now - TEST_SEND_WINDOW]
    if len(recent) < per_hour:
        return None
    frees_at = recent[len(recent) - per_hour] + TEST_SEND_WINDOW
    return max(frees_at - now, timedelta(seconds=1))
