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
    Policy,
    cap_window_start,
    evaluate_triggered,
    triggered_by,
)
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
class Tally:
    """What a result reports, counted as the replay goes. Several replays of one backtest (each deciding the changes
    of some customers) add theirs up: `position`, a change's place in the whole stream, keeps "the first" (example,
    samples) and the order of equal counts what one replay of the whole stream would have said."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, tuple[int, str]] = field(default_factory=dict)  # code: (position, detail) of its first
    days: Counter[date] = field(default_factory=Counter)
    day_segments: Counter[date] = field(default_factory=Counter)
    samples: list[tuple[int, Sample]] = field(default_factory=list)
    read: int = 0
    held: int = 0
    segments: int = 0

    def add(self, other: Tally) -> None:
        self.outcomes += other.outcomes
        self.reasons += other.reasons
        for code, example in other.examples.items():
            self.examples[code] = min(self.examples.get(code, example), example, key=lambda first: first[0])
        self.days += other.days
        self.day_segments += other.day_segments
        self.samples = sorted(self.samples + other.samples, key=lambda sample: sample[0])[:SAMPLES]
        self.read += other.read
        self.held += other.held
        self.segments += other.segments


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
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        self._zone = ZoneInfo(self.policy.default_zone)

    @property
    def read(self) -> int:
        return self.tally.read

    def decide(self, past: PastChange, position: int | None = None) -> Decision | None:
        """The live decision for this change at the moment it was applied; None when the trigger does not match.
        `position`: its place in the whole stream (by default, this replay's count: it sees the whole stream)."""
        tally = self.tally
        position = tally.read if position is None else position
        tally.read += 1
        event, now = past.change, past.recorded_at
        if not triggered_by(self.definition, event):
            return None
        start = cap_window_start(now, self.partner)
        recent = self.ledger.count(event.order.customer.id, start, now) if start else 0
        history = History(event.order_id in self.fired_orders, recent)
        decision = evaluate_triggered(self.definition, event, history, self.policy.context(now, self.partner))
        self._count(past, decision, position)
        return decision

    def _count(self, past: PastChange, decision: Decision, position: int) -> None:
        tally = self.tally
        tally.outcomes[decision.outcome] += 1
        if decision.outcome == Outcome.FILTERED_OUT:
            for reason in decision.reasons:
                tally.reasons[reason.code] += 1
                tally.examples.setdefault(reason.code, (position, reason.detail))
        sms = decision.sms
        if decision.outcome != Outcome.FIRED or sms is None:
            return
        event = past.change
        self.fired_orders.add(event.order_id)
        if not self.definition.transactional and self.partner.frequency_cap is not None:  # only the cap reads it
            self.ledger.replayed[event.order.customer.id].append(past.recorded_at)
        sent_at = sms.not_before or past.recorded_at
        tally.held += sms.not_before is not None
        tally.segments += sms.parts.segments
        day = sent_at.astimezone(self._zone).date()
        tally.days[day] += 1
        tally.day_segments[day] += sms.parts.segments
        if len(tally.samples) < SAMPLES:
            sample = Sample(
                order_id=event.order_id,
                customer_id=event.order.customer.id,
                phone=sms.phone,
                text=sms.text,
                encoding=sms.parts.encoding,
                segments=sms.parts.segments,
                changed_at=past.recorded_at,
                sent_at=sent_at,
            )
            tally.samples.append((position, sample))

    def percent(self, at: datetime) -> float:
        span = (self.until - self.since).total_seconds()
        return round(min(100.0, max(0.0, (at - self.since).total_seconds() / span * 100)), 1)

    def result(self, seconds: float, tally: Tally | None = None) -> BacktestResult:
        """The result of this replay's `tally`, or of `tally` (all the replays' of this backtest, added up)."""
        tally = tally or self.tally
        first = self.since.astimezone(self._zone).date()
        last = max(self.until.astimezone(self._zone).date(), max(tally.days, default=first))
        every_day = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        price = self.price_per_segment
        # Most frequent first; equal counts in the order their first change came (as Counter.most_common would).
        reasons = sorted(tally.reasons.items(), key=lambda item: (-item[1], tally.examples[item[0]][0]))
        outcomes = tally.outcomes
        return BacktestResult(
            since=self.since,
            until=self.until,
            changes_read=tally.read,
            triggered=sum(outcomes.values()),
            filtered_out=outcomes[Outcome.FILTERED_OUT],
            filtered_out_by_reason=[
                ReasonCount(code=code, changes=n, example=tally.examples[code][1]) for code, n in reasons
            ],
            outside_reentry=outcomes[Outcome.OUTSIDE_REENTRY],
            capped=outcomes[Outcome.CAPPED],
            failed=outcomes[Outcome.FAILED],
            sms=outcomes[Outcome.FIRED],
            held_by_quiet_hours=tally.held,
            segments=tally.segments,
            cost=tally.segments * price if price is not None else None,
            per_day=[DaySms(day=d, sms=tally.days[d], segments=tally.day_segments[d]) for d in every_day],
            samples=[sample for _, sample in tally.samples],
            seconds=round(seconds, 2),
        )
