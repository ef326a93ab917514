"""The order rules without I/O (no Kafka, no PostgreSQL, no fixtures): transitions, refusals, staleness of
statuses and of details, and how their watermarks move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contracts.orders import Customer
from contracts.statuses import StatusDefinition, StatusType
from orders.domain import (
    DETAIL_FIELDS,
    DetailsOutcome,
    Order,
    OrderDetails,
    Outcome,
    Reason,
    Refused,
    Requested,
    decide,
    decide_all,
    decide_details,
    initial_finder,
    is_older,
    new_order,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # when the service processes: later than every upstream time
GENERAL, DELIVERY, PAYMENT = StatusType.GENERAL, StatusType.DELIVERY, StatusType.PAYMENT


def definition(code: str, status_type: StatusType, *, initial: bool = False, **fields: object) -> StatusDefinition:
    return StatusDefinition.model_validate(
        {"partner_id": "demo", "code": code, "name": code.title(), "type": status_type, "is_initial": initial,
         "include_in_analytics": True, "version": 1, "created_at": T0, "updated_at": T0, **fields}
    )  # fmt: skip


CATALOG = [
    definition("accepted", GENERAL, initial=True),
    definition("completed", GENERAL, allowed_next=[]),
    definition("at_pickup_point", DELIVERY, initial=True, allowed_next=["shipped"]),
    definition("shipped", DELIVERY, allowed_next=["delivered"]),
    definition("delivered", DELIVERY),
    definition("invoice_issued", PAYMENT, initial=True),
    definition("paid", PAYMENT),
    definition("old_way", PAYMENT, archived=True),
]
LOOKUP = {d.code: d for d in CATALOG}.get
INITIAL = initial_finder(CATALOG)


def details(at: datetime = T0, seq: int | None = None, **changes: object) -> OrderDetails:
    customer = Customer(id="c-1", phone="+79001234567", name="Анна", sms_consent=True)
    customer = customer.model_copy(update={k: v for k, v in changes.items() if k != "amount"})
    amount = Decimal(str(changes.get("amount", "1990.00")))
    return OrderDetails(customer, amount, "RUB", T0, occurred_at=at, source_sequence=seq)


def order(at: datetime = T0, seq: int | None = None) -> Order:
    return new_order("demo", "o-1", details(at, seq))[0]


def apply(target: Order, code: str, at: datetime = T0, seq: int | None = None) -> Outcome:
    return decide(target, Requested(code, at, seq), LOOKUP, INITIAL, NOW).outcome


# Transitions and refusals


def test_a_first_status_applies_with_a_gap_free_sequence_and_both_times() -> None:
    target = order()
    late = T0 - timedelta(hours=5)  # reported late: it happened upstream well before it is processed
    change = decide(target, Requested("accepted", late), LOOKUP, INITIAL, NOW)
    assert (change.outcome, change.sequence, change.from_status) == (Outcome.APPLIED, 1, None)
    applied = target.statuses[GENERAL]
    assert (applied.entered_at, applied.recorded_at, applied.occurred_at) == (late, NOW, late)
    assert decide(target, Requested("invoice_issued", T0), LOOKUP, INITIAL, NOW).sequence == 2


@pytest.mark.parametrize(
    ("codes", "reason"),
    [
        (["teleported"], Reason.UNKNOWN_STATUS),
        (["old_way"], Reason.ARCHIVED_STATUS),
        (["shipped"], Reason.NOT_INITIAL),
        (["at_pickup_point", "delivered"], Reason.TRANSITION_NOT_ALLOWED),
        (["accepted", "completed", "accepted"], Reason.TRANSITION_NOT_ALLOWED),  # completed is final
    ],
)
def test_refusals(codes: list[str], reason: Reason) -> None:
    target = order()
    *before, last = codes
    for n, code in enumerate(before):
        apply(target, code, T0 + timedelta(minutes=n))
    with pytest.raises(Refused) as refused:
        apply(target, last, T0 + timedelta(hours=1))
    assert refused.value.reason is reason


def test_a_code_given_as_another_type_is_refused() -> None:
    requested = Requested("paid", T0, expected_type=DELIVERY)
    with pytest.raises(Refused) as refused:
        decide(order(), requested, LOOKUP, INITIAL, NOW)
    assert refused.value.reason is Reason.WRONG_TYPE


def test_one_refused_change_refuses_the_whole_event_and_leaves_the_order_untouched() -> None:
    target = order()
    apply(target, "accepted")
    requests = [Requested("invoice_issued", T0), Requested("shipped", T0)]  # shipped is not the initial one
    with pytest.raises(Refused):
        decide_all(target, requests, LOOKUP, INITIAL, NOW)
    assert set(target.statuses) == {GENERAL} and target.last_sequence == 1


# Staleness of statuses and their watermark


def test_staleness_is_by_source_sequence_when_both_have_one_else_by_time() -> None:
    assert is_older(T0 + timedelta(hours=1), 4, T0, 5)  # sequence wins over a later time
    assert not is_older(T0 - timedelta(hours=1), 6, T0, 5)
    assert is_older(T0 - timedelta(seconds=1), None, T0, 5)  # one side without a sequence: by time
    assert is_older(T0 - timedelta(seconds=1), 6, T0, None)
    assert not is_older(T0, None, T0, None)  # the same time is not older


def test_a_stale_status_changes_nothing_and_each_type_has_its_own_watermark() -> None:
    target = order()
    apply(target, "at_pickup_point", T0, seq=5)
    assert apply(target, "shipped", T0 + timedelta(hours=1), seq=4) is Outcome.STALE
    assert target.statuses[DELIVERY].ref.code == "at_pickup_point" and target.last_sequence == 1
    assert apply(target, "accepted", T0 - timedelta(days=1), seq=1) is Outcome.APPLIED  # general: no watermark yet


def test_the_same_status_again_moves_the_watermark_but_keeps_when_it_was_entered() -> None:
    target = order()
    apply(target, "at_pickup_point", T0, seq=1)
    apply(target, "shipped", T0 + timedelta(hours=1), seq=5)
    assert apply(target, "shipped", T0 + timedelta(hours=3), seq=7) is Outcome.UNCHANGED
    shipped = target.statuses[DELIVERY]
    assert (shipped.source_sequence, shipped.occurred_at) == (7, T0 + timedelta(hours=3))
    assert shipped.entered_at == T0 + timedelta(hours=1)  # still in it since then
    assert apply(target, "delivered", T0 + timedelta(hours=4), seq=6) is Outcome.STALE  # newer than 5, not 7


def test_an_older_repeat_never_moves_the_watermark_back() -> None:
    target = order()
    apply(target, "accepted", T0 + timedelta(hours=2))
    assert apply(target, "accepted", T0 + timedelta(hours=1)) is Outcome.STALE
    assert target.statuses[GENERAL].occurred_at == T0 + timedelta(hours=2)


# Details: the same ordering rule, a watermark of their own


def test_a_new_order_takes_the_upserts_details_and_position() -> None:
    created, change = new_order("demo", "o-1", details(T0, seq=3))
    assert change.outcome is DetailsOutcome.CREATED and change.fields == DETAIL_FIELDS
    assert (created.details_occurred_at, created.details_source_sequence) == (T0, 3)


def test_newer_details_apply_and_say_which_fields_changed() -> None:
    target = order(T0, seq=1)
    change = decide_details(target, details(T0 + timedelta(hours=1), seq=2, phone="+79990000000", amount="10"))
    assert change.outcome is DetailsOutcome.UPDATED and change.fields == ("customer.phone", "amount")
    assert target.customer.phone == "+79990000000" and target.amount == Decimal("10")
    assert (target.details_occurred_at, target.details_source_sequence) == (T0 + timedelta(hours=1), 2)


@pytest.mark.parametrize(
    ("stored", "late"),
    [
        ((T0, 5), (T0 + timedelta(hours=1), 4)),  # an older source sequence, whatever its time
        ((T0, None), (T0 - timedelta(minutes=1), None)),  # no sequences: an older time
        ((T0, 5), (T0 - timedelta(minutes=1), None)),  # one without a sequence: by time
    ],
)
def test_stale_details_change_nothing_and_name_the_fields_they_would_have_changed(
    stored: tuple[datetime, int | None], late: tuple[datetime, int | None]
) -> None:
    target = order(*stored)
    change = decide_details(target, details(*late, name="Old name", sms_consent=False, amount="1"))
    assert change.outcome is DetailsOutcome.STALE
    assert change.fields == ("customer.name", "customer.sms_consent", "amount")
    assert (target.customer.name, target.customer.sms_consent, target.amount) == ("Анна", True, Decimal("1990.00"))
    assert (target.details_occurred_at, target.details_source_sequence) == stored


def test_equal_details_are_unchanged_and_move_the_watermark_forward_only() -> None:
    target = order(T0 + timedelta(hours=2), seq=5)
    change = decide_details(target, details(T0 + timedelta(hours=1), seq=6))  # newer by sequence, earlier clock
    assert (change.outcome, change.fields) == (DetailsOutcome.UNCHANGED, ())
    assert (target.details_occurred_at, target.details_source_sequence) == (T0 + timedelta(hours=2), 6)


def test_details_of_an_order_stored_before_the_watermark_existed_apply() -> None:
    target = order()
    target.details_occurred_at = target.details_source_sequence = None  # as migrated
    change = decide_details(target, details(T0 - timedelta(days=1), phone="+79990000000"))
    assert change.outcome is DetailsOutcome.UPDATED and target.details_occurred_at == T0 - timedelta(days=1)


def test_a_stale_upsert_still_applies_its_newer_statuses_and_the_snapshot_keeps_the_newer_details() -> None:
    target = order(T0 + timedelta(hours=2), seq=10)  # details of a newer upsert
    apply(target, "accepted", T0, seq=1)
    late = T0 + timedelta(hours=1)
    statuses = [Requested("accepted", late, 3), Requested("invoice_issued", late, 3)]
    changes = decide_all(target, statuses, LOOKUP, INITIAL, NOW)
    assert [c.outcome for c in changes] == [Outcome.UNCHANGED, Outcome.APPLIED]  # judged per type
    assert decide_details(target, details(late, seq=3, phone="+79990000000")).outcome is DetailsOutcome.STALE
    snapshot = target.snapshot()
    assert snapshot.customer.phone == "+79001234567" and snapshot.statuses.payment is not None
