"""Orders and their three statuses: the rules, free of I/O.

An order holds at most one current status per type. A requested change is checked against the
partner's status catalog (the code must exist and be live, `allowed_next` is enforced, the first
status of a type must be the initial one when the partner marked one) and against what was
already applied for that type: an event older than the last applied one (by `source_sequence`
when both have one, else by `occurred_at`) is stale and changes nothing.

The order's own details (customer, amount, currency, placed_at) follow the same rule against a watermark of
their own: an upsert older than the details applied last leaves them as they are, while each status it
names is still judged against its own type's watermark.

Two times are kept for every applied status: `occurred_at` (when it happened upstream: analytics use it)
and `recorded_at` (when this service applied it).
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
    """What was last applied for one type: the status, when it was entered, and the staleness watermark.

    `entered_at` is the upstream time of the event that set the status; `occurred_at`/`source_sequence` are the
    watermark, which a newer event naming the same status moves on (so they may be later than `entered_at`).
    """

    ref: StatusRef
    occurred_at: datetime
    source_sequence: int | None
    recorded_at: datetime  # when this service applied it
    entered_at: datetime  # when it happened upstream


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
class OrderDetails:
    """The order's own data as an upsert reports it, with the position of that event upstream."""

    customer: Customer
    amount: Decimal
    currency: str
    placed_at: datetime
    occurred_at: datetime
    source_sequence: int | None = None


DETAIL_FIELDS = (
    "customer.id", "customer.phone", "customer.name", "customer.sms_consent", "amount", "currency", "placed_at",
)  # fmt: skip


class DetailsOutcome(StrEnum):
    CREATED = "created"  # the upsert that created the order
    UPDATED = "updated"  # newer details that differ from the stored ones
    UNCHANGED = "unchanged"  # newer details equal to the stored ones: only the watermark moves
    STALE = "stale"  # older than the details applied last: ignored


@dataclass(frozen=True)
class DetailsChange:
    """The result of an upsert's details; `fields` differ from the stored ones (changed, or ignored when stale)."""

    outcome: DetailsOutcome
    reported: OrderDetails
    fields: tuple[str, ...]


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
    # The details' watermark: the position of the upsert whose details are stored. None when unknown (orders
    # stored before it was kept): the next upsert applies.
    details_occurred_at: datetime | None = None
    details_source_sequence: int | None = None

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


def is_older(
    occurred_at: datetime, source_sequence: int | None, than_occurred_at: datetime, than_source_sequence: int | None
) -> bool:
    """The ordering rule of upstream events: by source sequence when both have one, else by time."""
    if than_source_sequence is not None and source_sequence is not None:
        return source_sequence < than_source_sequence
    return occurred_at < than_occurred_at


def is_stale(applied: Applied, requested: Requested) -> bool:
    """Older than what is applied for the type."""
    return is_older(requested.occurred_at, requested.source_sequence, applied.occurred_at, applied.source_sequence)


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
    at = requested.occurred_at
    order.statuses[target.type] = Applied(to_ref, at, requested.source_sequence, recorded_at=now, entered_at=at)
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


def new_order(partner_id: str, order_id: str, reported: OrderDetails) -> tuple[Order, DetailsChange]:
    """An order created by an upsert: its details and their watermark are the upsert's."""
    order = Order(partner_id, order_id, reported.customer, reported.amount, reported.currency, reported.placed_at)
    _store_details(order, reported)
    return order, DetailsChange(DetailsOutcome.CREATED, reported, DETAIL_FIELDS)


def decide_details(order: Order, reported: OrderDetails) -> DetailsChange:
    """Apply an upsert's details to `order` unless they are older than the stored ones (same rule as statuses)."""
    fields = tuple(
        f for f, old, new in zip(DETAIL_FIELDS, _values(order), _values(reported), strict=True) if old != new
    )
    if order.details_occurred_at is not None and is_older(
        reported.occurred_at, reported.source_sequence, order.details_occurred_at, order.details_source_sequence
    ):
        return DetailsChange(DetailsOutcome.STALE, reported, fields)
    if fields or order.details_occurred_at is None:
        _store_details(order, reported)
    else:
        # Equal details, as for the same status again: a newer event moves the watermark, never back.
        _store_details(
            order, replace(
                reported, occurred_at=max(order.details_occurred_at, reported.occurred_at),
                source_sequence=_newest(order.details_source_sequence, reported.source_sequence),
            ),
        )  # fmt: skip
    return DetailsChange(DetailsOutcome.UPDATED if fields else DetailsOutcome.UNCHANGED, reported, fields)


def _values(details: Order | OrderDetails) -> tuple[object, ...]:
    customer = details.customer
    return (customer.id, customer.phone, customer.name, customer.sms_consent, details.amount, details.currency,
            details.placed_at)  # fmt: skip


def _store_details(order: Order, reported: OrderDetails) -> None:
    # Assigned even when equal: an amount of another scale (1990.0 and 1990.00) is kept as last sent.
    order.customer, order.amount, order.currency = reported.customer, reported.amount, reported.currency
    order.placed_at = reported.placed_at
    order.details_occurred_at, order.details_source_sequence = reported.occurred_at, reported.source_sequence


def initial_finder(definitions: Iterable[StatusDefinition]) -> Callable[[StatusType], str | None]:
    initials = {d.type: d.code for d in definitions if d.is_initial and not d.archived}
    return initials.get
