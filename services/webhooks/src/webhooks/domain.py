"""The rules of webhooks, with no I/O: what an endpoint is, which events it gets, where it may point, when a failed
delivery is tried again and when an endpoint is disabled."""

from __future__ import annotations

import base64
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, StringConstraints, field_validator

from contracts.statuses import StatusType
from contracts.webhooks import WebhookEventType

# Svix's schedule: the first attempt at once, then these delays after each failure; after the last, given up.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1

MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"


class Clock(Protocol):
    """Where the schedule reads the time: the system's in production, one the test moves in tests."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# --- endpoints ---------------------------------------------------------------------------------------------------

Description = Annotated[str, StringConstraints(max_length=500)]


def check_url(url: str) -> str:
    """An endpoint's URL: absolute http(s), a host, no credentials, no fragment. Where the host points is checked
    apart (`forbidden_address`), since that takes a DNS look-up."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with https:// or http://")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: the signature authenticates the platform")
    if parts.fragment:
        raise ValueError("must not have a fragment")
    del port
    return url


def _unique_event_types(types: list[WebhookEventType]) -> list[WebhookEventType]:
    return sorted(set(types))


class NewEndpoint(BaseModel):
    url: str = Field(description="Where deliveries are POSTed (http or https)", examples=["https://shop.example/hooks"])
    event_types: list[WebhookEventType] = Field(
        min_length=1, max_length=len(WebhookEventType), description="The events this endpoint gets"
    )
    status_type: StatusType | None = Field(
        default=None,
        description="Only status changes and status definitions of this type (SMS events are not filtered); "
        "null: every type",
    )
    description: Description | None = None
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_url(url)

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[WebhookEventType]) -> list[WebhookEventType]:
        return _unique_event_types(types)


class EndpointPatch(BaseModel):
    """Only the fields sent change; `status_type` or `description` sent as null clear them."""

    url: str | None = None
    event_types: list[WebhookEventType] | None = Field(default=None, min_length=1, max_length=len(WebhookEventType))
    status_type: StatusType | None = None
    description: Description | None = None
    enabled: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
        return None if types is None else _unique_event_types(types)

    @field_validator("enabled", "url", "event_types", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class DisabledCause(StrEnum):
    """Why an endpoint is disabled, a stable code (`disabled_reason` says it in words)."""

    GONE_410 = "gone_410"  # it answered 410 Gone
    FAILING_5_DAYS = "failing_5_days"  # every delivery failed for DISABLE_AFTER_FAILING_S (5 days)
    BY_PARTNER = "by_partner"  # an admin or API client of the partner disabled it


class Endpoint(BaseModel):
    id: str
    url: str
    event_types: list[WebhookEventType]
    status_type: StatusType | None
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the platform disabled the endpoint (410 Gone, or failing for days); null when it did not"
    )
    disabled_cause: DisabledCause | None = Field(
        description="Why it is disabled, a stable code: gone_410 (it answered 410 Gone), failing_5_days (every "
        "delivery failed for 5 days), by_partner (the partner disabled it); null while enabled"
    )
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="The first failure since the last success; null: none")
    paused_until: datetime | None = Field(
        description="While it is failing, when the next attempt goes: nothing is sent to it before, then one message "
        "probes it (a success gives it back its full pace); null: not paused"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation, until when the previous secret still signs too (both signatures are sent)"
    )
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Incremented by every change; the ETag, sent back in If-Match")


class EndpointCreated(Endpoint):
    secret: str = Field(description="The signing secret (whsec_...), shown in this answer only")


class RotatedSecret(BaseModel):
    secret: str = Field(description="The new signing secret, shown in this answer only")
    previous_secret_expires_at: datetime | None
    version: int


def new_endpoint_id() -> str:
    return f"ep_{uuid.uuid4().hex}"


def new_message_id() -> str:
    """A message's id, its `webhook-id` on every attempt."""
    return f"msg_{uuid.uuid4().hex}"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 256 random bits in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def apply_patch(endpoint: Endpoint, patch: EndpointPatch) -> dict[str, Any]:
    """The columns a patch changes. Enabling again forgets why the platform disabled it and the failures before (and
    the pause they left); so does a new URL, a new target with no history. Other changes (event types, filter,
    description) keep the streak and the pause: the target is the same."""
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("url", endpoint.url) != endpoint.url:
        changes.update(failing_since=None, paused_until=None)
    if changes.get("enabled") is True and not endpoint.enabled:
        changes.update(
            disabled_reason=None, disabled_cause=None, disabled_at=None, failing_since=None, paused_until=None
        )
    if changes.get("enabled") is False and endpoint.enabled:
        changes.update(disabled_cause=DisabledCause.BY_PARTNER)
    return changes


def wants(
    endpoint_types: list[str], endpoint_status_type: str | None, event_type: str, status_type: str | None
) -> bool:
    """Whether an endpoint gets an event: one of its types, and of its status type when it names one (events with
    no status type, the SMS ones, pass that filter)."""
    if event_type not in endpoint_types:
        return False
    return endpoint_status_type is None or status_type is None or status_type == endpoint_status_type


# --- where an endpoint may point -----------------------------------------------------------------------------------

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden_address(address: IpAddress) -> str | None:
    """Why the platform must not call this address (None: it may): anything but a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_address(address.ipv4_mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, reason in (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return reason
    return None


# --- deliveries ------------------------------------------------------------------------------------------------------


class MessageState(StrEnum):
    PENDING = "pending"  # to be sent (again), at next_attempt_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # given up: every attempt of the schedule failed, or the endpoint answered 410


def held_back(sequence: int, pending: list[int]) -> bool:
    """Whether a status change waits for an earlier one of its order to the same endpoint (`pending`: the sequences
    of that order's pending messages there): one order's changes are sent in sequence order, each once every
    earlier one has succeeded or been given up."""
    return any(earlier < sequence for earlier in pending)


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: an HTTP status, or an error before any (refused address, timeout, connection)."""

    status: int | None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class Decision:
    state: MessageState
    next_attempt_at: datetime | None
    failing_since: datetime | None  # the endpoint's, after this attempt
    disable_reason: str | None = None
    disable_cause: DisabledCause | None = None


def decide(
    outcome: Outcome,
    attempts_made: int,
    now: datetime,
    failing_since: datetime | None,
    *,
    retry_after_cap: timedelta,
    disable_after: timedelta,
) -> Decision:
    """What follows an attempt (the `attempts_made`-th of its message): success; given up with the endpoint disabled
    (410 Gone); the next try on the schedule (or after Retry-After, capped); given up after the schedule's last. An
    endpoint failing since `disable_after` ago with no success between is disabled."""
    if outcome.succeeded:
        return Decision(MessageState.SUCCEEDED, None, None)
    failing_since = failing_since or now
    if outcome.gone:
        return Decision(
            MessageState.FAILED, None, failing_since, "the endpoint answered 410 Gone", DisabledCause.GONE_410
        )
    disable, cause = None, None
    if now - failing_since >= disable_after:
        disable = f"every delivery failed since {failing_since.isoformat(timespec='seconds')} ({_days(disable_after)})"
        cause = DisabledCause.FAILING_5_DAYS
    if attempts_made >= MAX_ATTEMPTS:
        return Decision(MessageState.FAILED, None, failing_since, disable, cause)
    delay = RETRY_DELAYS[attempts_made - 1]
    if outcome.retry_after_s is not None:
        delay = min(timedelta(seconds=outcome.retry_after_s), retry_after_cap)
    return Decision(MessageState.PENDING, now + delay, failing_since, disable, cause)


# A failing endpoint is paused after every failed attempt, for a tenth of its failure streak so far, at least the
# first pause and at most the longest (the settings: 1 s and 60 s): a new streak costs a second, an endpoint dead for
# a day one attempt a minute, and one that comes back waits at most a tenth of its outage (and a minute) longer.
PAUSE_SHARE_OF_STREAK = 0.1


def paused_until(
    outcome: Outcome,
    now: datetime,
    failing_since: datetime | None,
    *,
    first_pause: timedelta,
    longest_pause: timedelta,
    retry_after_cap: timedelta,
) -> datetime | None:
    """Until when nothing is sent to the endpoint after this attempt (a circuit breaker; then one message probes it);
    None: it succeeded, the endpoint gets all its slots again. `failing_since` is the streak's start, this failure
    included. A `Retry-After` (capped) pauses the whole endpoint at least that long: it asked for a rest."""
    if outcome.succeeded:
        return None
    streak = now - (failing_since or now)
    pause = min(longest_pause, max(first_pause, streak * PAUSE_SHARE_OF_STREAK))
    if outcome.retry_after_s is not None:
        pause = max(pause, min(timedelta(seconds=outcome.retry_after_s), retry_after_cap))
    return now + pause


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds():g} s"
