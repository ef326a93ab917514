"""The registry's rules as pure functions: no Kafka, no PostgreSQL (they run in `make check`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.statuses import StatusDefinition, StatusType
from status_registry.domain import (
    NewStatus,
    OrderMismatch,
    RuleViolation,
    StatusPatch,
    check_allowed_next,
    fields_of,
    patched,
    plan_sync,
    reordered,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def new(code: str, status_type: str = "delivery", **fields: Any) -> NewStatus:
    return NewStatus.model_validate({"code": code, "type": status_type, "name": code.title(), **fields})


def stored(code: str, status_type: str = "delivery", *, archived: bool = False, **fields: Any) -> StatusDefinition:
    return StatusDefinition.model_validate(
        {
            **new(code, status_type, **fields).model_dump(),
            "partner_id": "shop",
            "archived": archived,
            "version": 1,
            "created_at": NOW,
            "updated_at": NOW,
        }
    )


def test_a_patch_changes_only_the_fields_it_names() -> None:
    current = stored("shipped", include_in_analytics=True, position=3)
    after = patched(current, StatusPatch(name="Sent"))
    assert (after.name, after.include_in_analytics, after.position) == ("Sent", True, 3)


def test_code_and_type_are_immutable_and_a_name_cannot_be_null() -> None:
    current = stored("shipped")
    with pytest.raises(RuleViolation) as code:
        patched(current, StatusPatch(code="sent"))
    assert code.value.field == "code"
    with pytest.raises(RuleViolation) as kind:
        patched(current, StatusPatch(type="payment"))
    assert kind.value.field == "type"
    assert patched(current, StatusPatch(code="shipped")).name == "Shipped"  # the same code is no change
    with pytest.raises(RuleViolation, match="name cannot be null"):
        patched(current, StatusPatch.model_validate({"name": None}))


def test_an_explicit_null_allowed_next_means_any_status() -> None:
    final = stored("delivered", allowed_next=[])
    assert patched(final, StatusPatch.model_validate({"allowed_next": None})).allowed_next is None


def test_allowed_next_names_known_codes_of_the_same_type() -> None:
    types = {"shipped": StatusType.DELIVERY, "delivered": StatusType.DELIVERY, "paid": StatusType.PAYMENT}
    check_allowed_next("shipped", StatusType.DELIVERY, fields_of(stored("shipped", allowed_next=["delivered"])), types)
    with pytest.raises(RuleViolation, match="unknown status code 'teleported'"):
        check_allowed_next(
            "shipped", StatusType.DELIVERY, fields_of(stored("shipped", allowed_next=["teleported"])), types
        )
    with pytest.raises(RuleViolation, match="transitions stay within a type"):
        check_allowed_next("shipped", StatusType.DELIVERY, fields_of(stored("shipped", allowed_next=["paid"])), types)


def test_a_sync_plans_creates_updates_restores_archives_and_leaves_the_rest() -> None:
    current = [
        stored("accepted", "general"),
        stored("shipped", position=1),
        stored("lost", archived=True),
        stored("returned"),
    ]
    desired = [new("accepted", "general"), new("shipped", position=2), new("lost"), new("delivered")]
    plan = plan_sync(current, desired)
    assert [s.code for s in plan.create] == ["delivered"]
    assert [d.code for d, _ in plan.update] == ["shipped"]
    assert [d.code for d, _ in plan.restore] == ["lost"]
    assert [d.code for d in plan.archive] == ["returned"]
    assert [d.code for d in plan.unchanged] == ["accepted"]
    assert plan.changes == 4


def test_the_same_list_again_changes_nothing() -> None:
    desired = [new("accepted", "general", is_initial=True), new("shipped")]
    current = [stored(s.code, s.type, **s.model_dump(exclude={"code", "type", "name"})) for s in desired]
    assert plan_sync(current, desired).changes == 0


def test_an_incoherent_list_is_refused_whole() -> None:
    with pytest.raises(RuleViolation, match="more than once: shipped"):
        plan_sync([], [new("shipped"), new("shipped")])
    with pytest.raises(RuleViolation, match="more than one initial status"):
        plan_sync([], [new("a", is_initial=True), new("b", is_initial=True)])
    with pytest.raises(RuleViolation, match="type is immutable"):
        plan_sync([stored("shipped")], [new("shipped", "payment")])


def test_a_reorder_moves_only_the_statuses_whose_position_changes() -> None:
    current = [stored("shipped", position=10), stored("at_pickup", position=15), stored("delivered", position=30)]
    moves = reordered(current, ["at_pickup", "shipped", "delivered"])
    assert [(d.code, f.position) for d, f in moves] == [("at_pickup", 10), ("shipped", 20)]
    assert all(f == fields_of(d).model_copy(update={"position": f.position}) for d, f in moves)  # nothing else
    assert reordered([stored("a", position=10), stored("b", position=20)], ["a", "b"]) == []


def test_a_reorder_must_name_each_current_status_once() -> None:
    current = [stored("shipped"), stored("at_pickup")]
    with pytest.raises(RuleViolation, match="more than once: shipped"):
        reordered(current, ["shipped", "shipped", "at_pickup"])
    with pytest.raises(OrderMismatch, match="leaves out at_pickup; delivered is not among them") as mismatch:
        reordered(current, ["shipped", "delivered"])
    assert (mismatch.value.missing, mismatch.value.unknown) == (["at_pickup"], ["delivered"])
