"""Journeys: what an order does at each step of a campaign's chain (waits, filters, SMS, exits), free of I/O.

A run is one order's way through one journey. It waits at a wait step until its `due_at`; then `advance` takes
it through every following step that needs no wait, in one go, until the next wait, the end, or a reason to
leave. The services layer stores what `advance` returns, with the SMS it decided, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from campaigns.domain import (
    CampaignDefinition,
    ChangeView,
    Condition,
    Context,
    Decision,
    FilterStep,
    History,
    OrderView,
    Outcome,
    Reason,
    SendSmsStep,
    WaitDuration,
    WaitUntil,
    WaitUntilTime,
    condition_failure,
    plan_sms,
)
from campaigns.recipients import PhoneProblem, recipient_zone, sms_phone

ENTRY_STEP = -1  # a run that entered and has not run its first step yet


class RunState(StrEnum):
    WAITING = "waiting"  # at a wait step (or entered), until due_at
    HELD = "held"  # waiting, but its campaign is paused: the timers do not fire it
    DONE = "done"  # went through every step
    LEFT = "left"  # left early: left_reason says why


class LeftReason(StrEnum):
    EXIT = "exit"  # the exit conditions held
    FILTERED_OUT = "filtered_out"  # a filter step failed, or the order has no phone to send to
    CAPPED = "capped"  # the frequency cap refused a send_sms step
    FAILED = "failed"  # a send_sms step's template gave no sendable text
    PAUSED_TOO_LONG = "paused_too_long"  # its wait ended during a pause, longer ago than late_send_minutes
    ARCHIVED = "archived"  # the campaign was archived


OPEN_STATES = (RunState.WAITING, RunState.HELD)


@dataclass(frozen=True)
class StepSend:
    """A send_sms step's decision: FIRED with the SMS, or why not."""

    step: int
    template: SendSmsStep
    decision: Decision


@dataclass(frozen=True)
class Advance:
    """Where a run stands after `advance`: `step` is the wait step it waits at, the step it left at, or the number
    of steps when done."""

    step: int
    state: RunState
    due_at: datetime | None = None
    left_reason: LeftReason | None = None
    reasons: list[Reason] = field(default_factory=list)
    sends: list[StepSend] = field(default_factory=list)


def all_hold(conditions: list[Condition], order: OrderView, region: str) -> bool:
    return all(condition_failure(c, order, region) is None for c in conditions)


def exits(definition: CampaignDefinition, order: OrderView, region: str) -> bool:
    """The order leaves the journey at once when every exit condition holds (no exit conditions: never)."""
    return bool(definition.exit_conditions) and all_hold(definition.exit_conditions, order, region)


def zone_of(order: OrderView, default_region: str, default_zone: str) -> str:
    """The recipient's zone, from the phone; the default zone without a usable phone."""
    try:
        return recipient_zone(sms_phone(order.customer.phone, default_region), default_zone)
    except PhoneProblem:
        return default_zone


def next_local_time(now: datetime, hours: int, minutes: int, zone: str) -> datetime:
    """The next instant after `now` the wall clock in `zone` shows hours:minutes (a time a clock change skips
    comes that much later: 02:30 on a spring-forward night is 03:30)."""
    tz = ZoneInfo(zone)
    local_today = now.astimezone(tz).date()
    for days in range(3):
        day = local_today + timedelta(days=days)
        candidate = _wall_clock(day, hours, minutes, tz)
        if candidate > now:
            return candidate
    raise AssertionError("a local time of day comes within two days")


def _wall_clock(day: date, hours: int, minutes: int, tz: ZoneInfo) -> datetime:
    # Through UTC: the aware local datetime's offset is that of its date, daylight saving time included.
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=tz).astimezone(UTC)


def advance(
    definition: CampaignDefinition, after_step: int, change: ChangeView, history: History, ctx: Context
) -> Advance:
    """Run the steps after `after_step` (the wait step whose time is up, or ENTRY_STEP) on the order as it is now,
    up to the next wait. Exit conditions first: a run whose order meets them leaves wherever it is."""
    order, region = change.order, ctx.default_region
    if exits(definition, order, region):
        return Advance(after_step, RunState.LEFT, left_reason=LeftReason.EXIT)
    sends: list[StepSend] = []
    step = after_step + 1
    while step < len(definition.steps):
        current = definition.steps[step]
        if isinstance(current, WaitDuration):
            return Advance(step, RunState.WAITING, ctx.now + timedelta(minutes=current.minutes), sends=sends)
        if isinstance(current, WaitUntilTime):
            wanted = current.local_time
            zone = zone_of(order, region, ctx.default_zone)
            due = next_local_time(ctx.now, wanted.hour, wanted.minute, zone)
            return Advance(step, RunState.WAITING, due, sends=sends)
        if isinstance(current, WaitUntil) and not all_hold(current.conditions, order, region):
            return Advance(step, RunState.WAITING, ctx.now + timedelta(minutes=current.longest_minutes), sends=sends)
        if isinstance(current, FilterStep):
            failures = [r for c in current.conditions if (r := condition_failure(c, order, region)) is not None]
            if failures:
                return Advance(step, RunState.LEFT, left_reason=LeftReason.FILTERED_OUT, reasons=failures, sends=sends)
        if isinstance(current, SendSmsStep):
            decision = plan_sms(definition, current.template, change, history, ctx)
            sends.append(StepSend(step, current, decision))
            if decision.outcome != Outcome.FIRED:
                reason = LeftReason(decision.outcome)
                return Advance(step, RunState.LEFT, left_reason=reason, reasons=decision.reasons, sends=sends)
            if not definition.transactional:  # the next send_sms step of this go counts this one in the cap
                history = History(history.fired_for_order, history.recent_marketing_sms + 1)
        step += 1
    return Advance(len(definition.steps), RunState.DONE, sends=sends)


def resumed(due_at: datetime, now: datetime, late_send_minutes: int) -> bool:
    """On resume, a held run goes on unless its wait ended more than late_send_minutes ago."""
    return now - due_at <= timedelta(minutes=late_send_minutes)


# --- the preview's timeline ----------------------------------------------------------------------


class TimelineEntry(BaseModel):
    after_minutes: float = Field(description="Minutes after the order entered")
    step: int | None = Field(description="The step's index; null for the entry and the end")
    kind: str = Field(description="entered | wait | filter | send | exit | leave | done")
    detail: str
    text: str | None = Field(default=None, description="The rendered SMS of a send")
    reasons: list[Reason] = Field(
        default_factory=list, description="Why the order leaves (exit, leave): stable codes a client puts in words"
    )


def timeline(definition: CampaignDefinition, change: ChangeView, history: History, ctx: Context) -> list[TimelineEntry]:
    """The sample order played through the journey, as if it never changed: each wait runs to its end (a wait
    until conditions to its longest wait, unless they hold at once)."""
    start, now = ctx.now, ctx.now
    entries = [TimelineEntry(after_minutes=0, step=None, kind="entered", detail="the order enters the journey")]
    after = ENTRY_STEP
    while True:
        here = Context(now, ctx.partner, ctx.default_region, ctx.default_zone)
        went = advance(definition, after, change, history, here)
        minutes = (now - start).total_seconds() / 60
        entries += _passed(definition, after, went, minutes, change, ctx)
        if went.state != RunState.WAITING:
            return entries
        assert went.due_at is not None
        entries.append(_wait_entry(definition, went.step, minutes, went.due_at, now))
        history = History(history.fired_for_order, history.recent_marketing_sms + len(went.sends))
        after, now = went.step, went.due_at


def _passed(
    definition: CampaignDefinition, after: int, went: Advance, minutes: float, change: ChangeView, ctx: Context
) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    sent = {send.step: send for send in went.sends}
    last = len(definition.steps) if went.state == RunState.DONE else went.step  # the steps passed, not the last
    for index in range(after + 1, last):
        step = definition.steps[index]
        if isinstance(step, FilterStep):
            entries.append(TimelineEntry(after_minutes=minutes, step=index, kind="filter", detail="the filter passes"))
        elif isinstance(step, WaitUntil):
            detail = "the conditions hold at once"
            entries.append(TimelineEntry(after_minutes=minutes, step=index, kind="wait", detail=detail))
        elif index in sent and sent[index].decision.sms is not None:
            sms = sent[index].decision.sms
            assert sms is not None
            held = f"; held by quiet hours until {sms.not_before.isoformat()}" if sms.not_before else ""
            entries.append(
                TimelineEntry(
                    after_minutes=minutes, step=index, kind="send", detail=f"SMS to {sms.phone}{held}", text=sms.text
                )
            )
    if went.state == RunState.LEFT:
        why = "; ".join(r.detail for r in went.reasons) or "the exit conditions hold"
        kind = "exit" if went.left_reason == LeftReason.EXIT else "leave"
        where = went.step if went.step >= 0 else None
        detail = f"{went.left_reason}: {why}"
        entries.append(
            TimelineEntry(after_minutes=minutes, step=where, kind=kind, detail=detail, reasons=list(went.reasons))
        )
    elif went.state == RunState.DONE:
        entries.append(TimelineEntry(after_minutes=minutes, step=None, kind="done", detail="the journey ends"))
    return entries


def _wait_entry(
    definition: CampaignDefinition, step: int, minutes: float, due: datetime, now: datetime
) -> TimelineEntry:
    current = definition.steps[step]
    length = (due - now).total_seconds() / 60
    if isinstance(current, WaitUntil):
        detail = f"the conditions do not hold; waits the longest wait, {length:g} minutes"
    elif isinstance(current, WaitUntilTime):
        detail = f"waits until {current.time} in the recipient's zone ({length:g} minutes)"
    else:
        detail = f"waits {length:g} minutes"
    return TimelineEntry(after_minutes=minutes, step=step, kind="wait", detail=detail)


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCount:
    """Runs counted by where they are (the database groups them)."""

    version: int  # the campaign's version at entry
    step: int
    state: RunState
    left_reason: str | None
    n: int


class StepFigures(BaseModel):
    index: int
    kind: str
    entered: int = Field(description="Orders that reached this step")
    waiting: int = Field(description="Orders waiting at this step now (held ones of a paused journey included)")
    exited: int = Field(description="Orders the exit conditions took out while at this step")
    filtered_out: int = Field(description="Orders that left here: a filter failed, or no phone to send to")
    sent: int = Field(description="SMS this step sent (a send_sms step)")


class VersionFigures(BaseModel):
    version: int = Field(description="The campaign version the definition was saved at")
    orders_in_journey: int = Field(description="Orders waiting on this version")


class JourneyFigures(BaseModel):
    steps: list[StepFigures] = Field(description="The current definition's steps, counting its orders only")
    exited_total: int = Field(description="Orders the exit conditions took out, every version")
    waiting_total: int = Field(description="Orders waiting now, every version")
    versions: list[VersionFigures] = Field(
        description="Each saved version with orders still in the journey, and the current one"
    )


def saved_version(versions: list[int], entered_at: int) -> int:
    """The definition version a run goes on with: the latest saved at or before the campaign version it entered at."""
    return max((v for v in versions if v <= entered_at), default=versions[0] if versions else entered_at)


def journey_figures(definition: CampaignDefinition, versions: list[int], counts: list[RunCount]) -> JourneyFigures:
    current = versions[-1] if versions else 0
    steps = [StepFigures(index=i, kind=s.kind, entered=0, waiting=0, exited=0, filtered_out=0, sent=0)
             for i, s in enumerate(definition.steps)]  # fmt: skip
    waiting_by_version: dict[int, int] = {current: 0}
    exited_total = waiting_total = 0
    for count in counts:
        version = saved_version(versions, count.version)
        is_open = count.state in OPEN_STATES
        if is_open:
            waiting_by_version[version] = waiting_by_version.get(version, 0) + count.n
            waiting_total += count.n
        if count.left_reason == LeftReason.EXIT:
            exited_total += count.n
        if version == current:
            _count_steps(steps, count, is_open)
    return JourneyFigures(
        steps=steps,
        exited_total=exited_total,
        waiting_total=waiting_total,
        versions=[VersionFigures(version=v, orders_in_journey=n) for v, n in sorted(waiting_by_version.items())],
    )


def _count_steps(steps: list[StepFigures], count: RunCount, is_open: bool) -> None:
    reached = len(steps) - 1 if count.state == RunState.DONE else count.step  # the last step it reached
    for figures in steps[: reached + 1]:
        figures.entered += count.n
        passed = figures.index < reached or count.state == RunState.DONE
        if figures.kind == "send_sms" and passed:
            figures.sent += count.n
    if 0 <= count.step < len(steps) and count.state != RunState.DONE:
        here = steps[count.step]
        if is_open:
            here.waiting += count.n
        elif count.left_reason == LeftReason.EXIT:
            here.exited += count.n
        elif count.left_reason == LeftReason.FILTERED_OUT:
            here.filtered_out += count.n
