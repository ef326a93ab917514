"""The recipient's side of an SMS: a sendable phone number, its time zone, and when quiet hours allow it. No I/O.

Upstream systems send phones as people type them (``8 (916) 123-45-67``); `phonenumbers` turns them into
E.164 with the partner's default region, and tells whether the number can receive SMS (mobile). The
recipient's time zone comes from the number too: a number whose region spans one zone gives it; when it
spans several (any Russian mobile number maps to 16 zones), the configured default zone is used, because
guessing the far end of the country would be wrong more often than the default.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

SMS_CAPABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


@dataclass(frozen=True)
class Phone:
    e164: str
    time_zones: tuple[str, ...]


class PhoneProblem(Exception):
    """The customer's phone cannot receive an SMS; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sms_phone(raw: str | None, default_region: str) -> Phone:
    """The E.164 form of a phone that can receive SMS, else `PhoneProblem` (no_phone, invalid_phone, not_mobile)."""
    found = _checked(raw, default_region)
    if isinstance(found, Phone):
        return found
    raise PhoneProblem(*found)


@functools.lru_cache(maxsize=100_000)
def _checked(raw: str | None, default_region: str) -> Phone | tuple[str, str]:
    """A phone or (reason, detail). Cached: customers come back, and parsing is the dearest step of a decision."""
    if not raw or not raw.strip():
        return "no_phone", "the customer has no phone number"
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        return "invalid_phone", f"'{raw}' is not a phone number: {exc}"
    if not phonenumbers.is_valid_number(number):
        return "invalid_phone", f"'{raw}' is not a valid number (default region {default_region})"
    if phonenumbers.number_type(number) not in SMS_CAPABLE:
        return "not_mobile", f"'{raw}' is not a mobile number"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    zones = tuple(z for z in timezone.time_zones_for_number(number) if z != timezone.UNKNOWN_TIMEZONE)
    return Phone(e164, zones)


def recipient_zone(phone: Phone, default_zone: str) -> str:
    return phone.time_zones[0] if len(phone.time_zones) == 1 else default_zone


def _local(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local wall-clock time has no offset: the recipient's time zone applies")
    return value


LocalTime = Annotated[
    time,
    AfterValidator(_local),
    # JSON Schema's "time" format requires an offset, which a local time has none of.
    WithJsonSchema(
        {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$", "examples": ["09:00"]}
    ),
]
"""A wall-clock time in the recipient's time zone: HH:MM or HH:MM:SS."""


class SendWindow(BaseModel):
    """Local times between which SMS may be sent, e.g. 09:00-21:00; `end` before `start` spans midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: LocalTime
    end: LocalTime

    def allows(self, local: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def not_before(now: datetime, window: SendWindow | None, zone: str) -> datetime | None:
    """None when an SMS may go now; else the next instant the window opens in the recipient's zone."""
    if window is None:
        return None
    local = now.astimezone(ZoneInfo(zone))
    if window.allows(local.time().replace(tzinfo=None)):
        return None
    opening = datetime.combine(local.date(), window.start, tzinfo=local.tzinfo)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), window.start, tzinfo=local.tzinfo)
    return opening.astimezone(now.tzinfo)
