"""The backtest: what a campaign (a draft, or a change to a stored one) would have sent over the last N days.

It replays the partner's real status changes into the trigger's statuses, read from the orders service over its
HTTP API (`GET /v1/status-changes`, NDJSON: each change as orders published it, the order's statuses as they were
at that moment), in the order they were applied, and decides each with `domain.evaluate`, the live consumer's own
decision, at the moment the consumer would have taken it (the change's `recorded_at`). What earlier decisions mean
for the next one (once per order, the frequency cap) is kept in memory as the replay goes: `Replay`, no I/O.
Nothing is sent, nothing is stored.

What it cannot know is in docs/console.md ("The backtest"): the customer's phone, name, consent and the order's
amount are as they are now; opt-outs, consent changes and provider failures are the notifier's, after the decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, Field

from campaigns.domain import (
    CampaignDefinition,
    Decision,
    History,
    Outcome,
    PartnerSettings,
    Reentry,
    cap_window_start,
    evaluate,
    triggered_by,
)
from campaigns.repository import CampaignRepository, fired_orders_before, marketing_sms_times
from campaigns.services import Policy
from contracts.orders import OrderStatusChanged
from contracts.sms import SmsEncoding
from servicekit.db import DbConnection
from servicekit.errors import ProblemError

log = logging.getLogger(__name__)

MAX_DAYS = 90
SAMPLES = 10
PROGRESS_EVERY_S = 0.25
CHUNK_BYTES = 64 * 1024  # read from orders a chunk at a time; the event loop is yielded between chunks


class OrdersUnavailable(ProblemError):
    """503: the orders service, whose history the backtest replays, could not be read."""

    status = 503
    default_code = "orders_unavailable"


class PastChange(BaseModel):
    """A line of orders' `GET /v1/status-changes` (tolerant reading: what else it carries is ignored)."""

    event_id: str
    recorded_at: datetime
    change: OrderStatusChanged


# --- the replay: decisions and their tally, no I/O ------------------------------------------------------------


class ReasonCount(BaseModel):
    code: str = Field(description="The reason's stable code, as in the campaign's stats (e.g. payment_status)")
    changes: int
    example: str = Field(description="The first such reason, in words, for one of those orders")


class DaySms(BaseModel):
    day: date = Field(description="In the service's default time zone")
    sms: int
    segments: int


class Sample(BaseModel):
    order_id: str
    customer_id: str
    phone: str
    text: str
    encoding: SmsEncoding
    segments: int
    changed_at: datetime = Field(description="When the change was applied: when the campaign would have decided")
    sent_at: datetime = Field(description="When it would have gone: later than changed_at when quiet hours held it")


class BacktestResult(BaseModel):
    since: datetime
    until: datetime
    changes_read: int = Field(description="Changes into the trigger's target statuses in the period")
    triggered: int = Field(description="Those that matched the whole trigger (its `from` too)")
    filtered_out: int
    filtered_out_by_reason: list[ReasonCount] = Field(description="A change failing several conditions counts in each")
    outside_reentry: int = Field(description="Already sent for that order (once per order)")
    capped: int = Field(description="Held back by the partner's frequency cap")
    failed: int = Field(description="The template gave no sendable text for the order")
    sms: int = Field(description="SMS that would have been sent")
    held_by_quiet_hours: int = Field(description="Of those, held until quiet hours ended")
    segments: int
    cost: Decimal | None = Field(description="segments x price_per_segment, when a price was given")
    per_day: list[DaySms] = Field(description="Every day of the period, by the day each SMS would have gone")
    samples: list[Sample] = Field(description=f"The first {SAMPLES} SMS, as they would have been sent")
    seconds: float


@dataclass
class CapLedger:
    """Marketing SMS times per customer: the other campaigns' real ones (sorted), and the replay's own."""

    others: dict[str, list[datetime]] = field(default_factory=dict)
    replayed: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))

    def count(self, customer_id: str, start: datetime, now: datetime) -> int:
        """SMS after `start` up to `now`, as the live cap counts them (`evaluated_at > window start`)."""
        total = 0
        for times in (self.others.get(customer_id, ()), self.replayed.get(customer_id, ())):
            total += bisect_right(times, now) - bisect_right(times, start)
        return total


@dataclass
class Replay:
    """Decides each change in turn and keeps what later decisions depend on and what the result reports."""

    definition: CampaignDefinition
    partner: PartnerSettings
    policy: Policy
    since: datetime
    until: datetime
    fired_orders: set[str] = field(default_factory=set)
    ledger: CapLedger = field(default_factory=CapLedger)
    price_per_segment: Decimal | None = None
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    days: Counter[date] = field(default_factory=Counter)
    day_segments: Counter[date] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    read: int = 0
    held: int = 0
    segments: int = 0

    def __post_init__(self) -> None:
        self._zone = ZoneInfo(self.policy.default_zone)

    def decide(self, past: PastChange) -> Decision | None:
        """The live decision for this change at the moment it was applied; None when the trigger does not match."""
        self.read += 1
        event, now = past.change, past.recorded_at
        if not triggered_by(self.definition, event):
            return None
        start = cap_window_start(now, self.partner)
        recent = self.ledger.count(event.order.customer.id, start, now) if start else 0
        history = History(fired_for_order=event.order_id in self.fired_orders, recent_marketing_sms=recent)
        decision = evaluate(self.definition, event, history, self.policy.context(now, self.partner))
        self._count(past, decision)
        return decision

    def _count(self, past: PastChange, decision: Decision) -> None:
        self.outcomes[decision.outcome] += 1
        if decision.outcome == Outcome.FILTERED_OUT:
            for reason in decision.reasons:
                self.reasons[reason.code] += 1
                self.examples.setdefault(reason.code, reason.detail)
        sms = decision.sms
        if decision.outcome != Outcome.FIRED or sms is None:
            return
        event = past.change
        self.fired_orders.add(event.order_id)
        if not self.definition.transactional:
            self.ledger.replayed[event.order.customer.id].append(past.recorded_at)
        sent_at = sms.not_before or past.recorded_at
        self.held += sms.not_before is not None
        self.segments += sms.parts.segments
        day = sent_at.astimezone(self._zone).date()
        self.days[day] += 1
        self.day_segments[day] += sms.parts.segments
        if len(self.samples) < SAMPLES:
            self.samples.append(
                Sample(
                    order_id=event.order_id,
                    customer_id=event.order.customer.id,
                    phone=sms.phone,
                    text=sms.text,
                    encoding=sms.parts.encoding,
                    segments=sms.parts.segments,
                    changed_at=past.recorded_at,
                    sent_at=sent_at,
                )
            )

    def percent(self, at: datetime) -> float:
        span = (self.until - self.since).total_seconds()
        return round(min(100.0, max(0.0, (at - self.since).total_seconds() / span * 100)), 1)

    def result(self, seconds: float) -> BacktestResult:
        first = self.since.astimezone(self._zone).date()
        last = max(self.until.astimezone(self._zone).date(), max(self.days, default=first))
        every_day = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        fired = self.outcomes[Outcome.FIRED]
        price = self.price_per_segment
        return BacktestResult(
            since=self.since,
            until=self.until,
            changes_read=self.read,
            triggered=sum(self.outcomes.values()),
            filtered_out=self.outcomes[Outcome.FILTERED_OUT],
            filtered_out_by_reason=[
                ReasonCount(code=code, changes=n, example=self.examples[code]) for code, n in self.reasons.most_common()
            ],
            outside_reentry=self.outcomes[Outcome.OUTSIDE_REENTRY],
            capped=self.outcomes[Outcome.CAPPED],
            failed=self.outcomes[Outcome.FAILED],
            sms=fired,
            held_by_quiet_hours=self.held,
            segments=self.segments,
            cost=self.segments * price if price is not None else None,
            per_day=[DaySms(day=d, sms=self.days[d], segments=self.day_segments[d]) for d in every_day],
            samples=self.samples,
            seconds=round(seconds, 2),
        )


# --- the use case: read the past from orders, replay it, report as it goes -----------------------------------


@dataclass(frozen=True)
class Backtest:
    """One backtest of a partner's campaign definition; `run` yields progress lines, then the result."""

    partner_id: str
    definition: CampaignDefinition
    days: int
    policy: Policy
    orders: httpx.AsyncClient  # the orders API, with the caller's token
    clock: Callable[[], datetime]
    campaign_id: str | None = None  # a change to this stored campaign: its real history counts
    price_per_segment: Decimal | None = None

    async def prepare(self, conn: DbConnection) -> Replay:
        """The replay, with what the database says about before the period: the partner's settings, the orders the
        stored campaign sent for already (once per order), the other campaigns' marketing SMS (the cap)."""
        until = self.clock()
        since = until - timedelta(days=self.days)
        partner = await CampaignRepository(conn, self.partner_id).settings()
        replay = Replay(self.definition, partner, self.policy, since, until, price_per_segment=self.price_per_segment)
        if self.campaign_id and self.definition.reentry == Reentry.ONCE_PER_ORDER:
            replay.fired_orders = await fired_orders_before(conn, self.campaign_id, since)
        start = cap_window_start(since, partner)
        if start is not None and not self.definition.transactional:
            replay.ledger.others = await marketing_sms_times(conn, self.partner_id, self.campaign_id, start, until)
        return replay

    async def open(self, replay: Replay) -> httpx.Response:
        """The orders stream, opened (its status known) before the backtest answers: a refusal is the answer."""
        trigger = self.definition.trigger
        params = {
            "status_type": str(trigger.status_type),
            "to": sorted(trigger.to_codes),
            "since": replay.since.isoformat(),
            "until": replay.until.isoformat(),
        }
        request = self.orders.build_request("GET", "/v1/status-changes", params=params)
        try:
            response = await self.orders.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise OrdersUnavailable(f"the orders service could not be reached: {exc}") from exc
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:500]
            await response.aclose()
            raise OrdersUnavailable(f"the orders service answered {response.status_code}: {body}")
        return response

    async def run(self, replay: Replay, stream: httpx.Response) -> AsyncGenerator[dict[str, object]]:
        """Progress lines while replaying, then the result line. Closing the iterator (the caller went away or
        cancelled) closes the orders stream, which stops its query."""
        started = time.monotonic()
        reported = started
        try:
            async for line in _lines(stream):
                past = PastChange.model_validate_json(line)
                replay.decide(past)
                if (now := time.monotonic()) - reported >= PROGRESS_EVERY_S:
                    reported = now
                    yield {"progress": {"processed": replay.read, "percent": replay.percent(past.recorded_at)}}
        except httpx.HTTPError as exc:
            raise OrdersUnavailable(f"the orders service's stream broke off: {exc}") from exc
        finally:
            await stream.aclose()
        yield {"progress": {"processed": replay.read, "percent": 100.0}}
        yield {"result": replay.result(time.monotonic() - started).model_dump(mode="json")}


async def _lines(stream: httpx.Response) -> AsyncIterator[bytes]:
    """The stream's lines, a chunk at a time; between chunks the event loop serves the live path first."""
    pending = b""
    async for chunk in stream.aiter_bytes(CHUNK_BYTES):
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            if line:
                yield line
        await asyncio.sleep(0)
    if pending.strip():
        yield pending
