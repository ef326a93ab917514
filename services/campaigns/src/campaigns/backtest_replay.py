"""A backtest's decisions, with no I/O: each past change decided by `domain.evaluate` at the moment it was applied,
and what earlier decisions mean for the next one (once per order, the frequency cap) kept as the replay goes.
Run in the backtest worker process (campaigns.backtest_worker); campaigns.backtest feeds it."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from campaigns.domain import (
    CampaignDefinition,
    Decision,
    History,
    Outcome,
    PartnerSettings,
    cap_window_start,
    evaluate,
    triggered_by,
)
from campaigns.services import Policy
from contracts.past_changes import PastChange
from contracts.sms import SmsEncoding

SAMPLES = 10


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
