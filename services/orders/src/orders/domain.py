"""Orders and their three statuses: the rules, free of I/O.

An order holds at most one current status per type. A requested change is checked against the
partner's status catalog (the code must exist and be live, `allowed_next` is enforced, the first
status of a type must be the initial one when the partner marked one) and against what was
already applied for that type: an event older than the last applied one (by `source_sequence`
when both have one, else by `occurred_at`) is stale and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from contracts.orders import Customer, OrderSnapshot
from contracts.statuses import CurrentStatuses, StatusDefinition, StatusRef, StatusType

Lookup = Callable[[str], StatusDefinition | None]
"""The partner's catalog: code -> definition (None when unknown)."""


class Reason(StrEnum):
    """Why a change is refused; also the dead-letter reason code."""

    UNKNOWN_STATUS = "unknown_status"
    ARCHIVED_STATUS = "archived_status"
    TRANSITION_NOT_ALLOWED = "transition_not_allowed"
    NOT_INITIAL = "not_initial_status"
    UNKNOWN_ORDER = "unknown_order"
    WRONG_TYPE = "wrong_status_type"


# Refusals that may heal by themselves: the registry replica or the order may arrive a moment later.
RETRIABLE = frozenset({Reason.UNKNOWN_STATUS, Reason.UNKNOWN_ORDER})


class Refused(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Applied:
    """What was last applied for one type: the status and the position of the event that set it."""

    ref: StatusRef
    occurred_at: datetime
    source_sequence: int | None
    since: datetime


@dataclass(frozen=True)
class Requested:
    """One requested status change, as upstream or the REST API asked for it."""

    code: str
    occurred_at: datetime
    source_sequence: int | None = None
    comment: str | None = None
    expected_type: StatusType | None = None  # set when the request names the type (OrderUpserted)


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE = "stale"


@dataclass(frozen=True)
class Change:
    """The result of one requested change; `sequence` is set for applied changes only."""

    status_type: StatusType
    outcome: Outcome
    requested: Requested
    from_status: StatusRef | None
    to_status: StatusRef
    to_include_in_analytics: bool
    sequence: int | None = None


@dataclass
class Order:
    partner_id: str
    order_id: str
    customer: Customer
    amount: Decimal
    currency: str
    placed_at: datetime
    statuses: dict[StatusType, Applied] = field(default_factory=dict)
    last_sequence: int = 0

    def snapshot(self) -> OrderSnapshot:
        current = CurrentStatuses(**{str(t): a.ref for t, a in self.statuses.items()})
        return OrderSnapshot(
            order_id=self.order_id,
            statuses=current,
            amount=self.amount,
            currency=self.currency,
            customer=self.customer,
            placed_at=self.placed_at,
        )


def resolve(lookup: Lookup, requested: Requested) -> StatusDefinition:
    """The definition a request names; refuses unknown and archived codes and a mismatched type."""
    definition = lookup(requested.code)
    if definition is None:
        raise Refused(Reason.UNKNOWN_STATUS, f"no status with code '{requested.code}' for this partner")
    if definition.archived:
        raise Refused(Reason.ARCHIVED_STATUS, f"status '{requested.code}' is archived and cannot be assigned")
    if requested.expected_type is not None and definition.type != requested.expected_type:
        raise Refused(
            Reason.WRONG_TYPE,
            f"'{requested.code}' is a {definition.type} status, given as {requested.expected_type}",
        )
    return definition


def is_stale(applied: Applied, requested: Requested) -> bool:
    """Older than what is applied for the type: by source sequence when both have one, else by time."""
    if applied.source_sequence is not None and requested.source_sequence is not None:
        return requested.source_sequence < applied.source_sequence
    return requested.occurred_at < applied.occurred_at


def _check_transition(
    lookup: Lookup, applied: Applied | None, target: StatusDefinition, partner_initial: str | None
) -> None:
    if applied is None:
        if partner_initial is not None and target.code != partner_initial:
            raise Refused(
                Reason.NOT_INITIAL,
                f"the first {target.type} status must be '{partner_initial}', not '{target.code}'",
            )
        return
    current = lookup(applied.ref.code)
    if current is not None and not current.allows_transition_to(target.code):
        allowed = ", ".join(current.allowed_next or []) or "none: it is final"
        raise Refused(
            Reason.TRANSITION_NOT_ALLOWED,
            f"{target.type} status '{applied.ref.code}' cannot move to '{target.code}' (allowed: {allowed})",
        )


def decide(
    order: Order,
    requested: Requested,
    lookup: Lookup,
    initial_of: Callable[[StatusType], str | None],
    now: datetime,
) -> Change:
    """Decide one change and apply it to `order` in memory; raises Refused when it breaks a rule."""
    target = resolve(lookup, requested)
    applied = order.statuses.get(target.type)
    to_ref = target.ref()
    from_ref = applied.ref if applied else None

    def result(outcome: Outcome, sequence: int | None = None) -> Change:
        return Change(target.type, outcome, requested, from_ref, to_ref, target.include_in_analytics, sequence)

    if applied is not None and is_stale(applied, requested):
        return result(Outcome.STALE)
    if applied is not None and applied.ref.code == target.code:
        # Same status again: nothing to emit, but a newer event moves the watermark so a late older one stays stale.
        order.statuses[target.type] = replace(
            applied, occurred_at=max(applied.occurred_at, requested.occurred_at),
            source_sequence=_newest(applied.source_sequence, requested.source_sequence),
        )  # fmt: skip
        return result(Outcome.UNCHANGED)
    _check_transition(lookup, applied, target, initial_of(target.type))
    order.last_sequence += 1
    order.statuses[target.type] = Applied(to_ref, requested.occurred_at, requested.source_sequence, now)
    return result(Outcome.APPLIED, order.last_sequence)


def _newest(a: int | None, b: int | None) -> int | None:
    return max(a, b) if a is not None and b is not None else (b if b is not None else a)


def decide_all(
    order: Order,
    requests: Iterable[Requested],
    lookup: Lookup,
    initial_of: Callable[[StatusType], str | None],
    now: datetime,
) -> list[Change]:
    """Decide several changes of one event atomically: any refusal refuses them all (order untouched)."""
    trial = replace(order, statuses=dict(order.statuses))
    changes = [decide(trial, r, lookup, initial_of, now) for r in requests]
    order.statuses, order.last_sequence = trial.statuses, trial.last_sequence
    return changes


def initial_finder(definitions: Iterable[StatusDefinition]) -> Callable[[StatusType], str | None]:
    initials = {d.type: d.code for d in definitions if d.is_initial and not d.archived}
    return initials.get
