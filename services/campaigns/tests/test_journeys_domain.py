"""Journeys without I/O: the definition's steps and their validation, one run's way through the steps, the next
local time of day across a clock change, the figures and the preview's timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from campaigns.domain import (
    Campaign,
    CampaignDefinition,
    History,
    InvalidCampaign,
    Outcome,
    check_definition,
    evaluate,
)
from campaigns.journeys import (
    ENTRY_STEP,
    LeftReason,
    RunCount,
    RunState,
    advance,
    journey_figures,
    next_local_time,
    resumed,
    timeline,
)

from .test_domain import CATALOG, NOW, SEED, change, context

AWAITING = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "awaiting_payment"}
PAID = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}
REMINDER: dict[str, Any] = {
    "name": "Payment reminder",
    "trigger": {"status_type": "payment", "to": "awaiting_payment"},
    "exit_conditions": [PAID],
    "steps": [
        {"kind": "wait_duration", "minutes": 24 * 60},
        {"kind": "filter", "conditions": [AWAITING]},
        {"kind": "send_sms", "template": "Order {{ order.id }} awaits payment", "sender": "DemoShop"},
        {"kind": "wait_duration", "minutes": 48 * 60},
        {"kind": "filter", "conditions": [AWAITING]},
        {"kind": "send_sms", "template": "Last reminder: order {{ order.id }}"},
    ],
}


def journey(**changes: Any) -> CampaignDefinition:
    return CampaignDefinition.model_validate(REMINDER | changes)


def problems(definition: CampaignDefinition) -> dict[str, str]:
    with pytest.raises(InvalidCampaign) as refused:
        check_definition(definition, CATALOG)
    return {".".join(map(str, p.loc)): p.message for p in refused.value.problems}


def awaiting() -> Any:
    return change(to="awaiting_payment", before="invoice_issued", payment="awaiting_payment")


# --- the definition ------------------------------------------------------------------------------


def test_a_one_step_campaign_keeps_its_json_byte_for_byte() -> None:
    """Today's campaigns (the seed's) read and write exactly as before journeys: no new field appears."""
    old = json.dumps(
        SEED
        | {
            "filters": [],
            "sender": None,
            "reentry": "once_per_order",
            "transactional": False,
            "quiet_hours": "partner_default",
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    definition = CampaignDefinition.model_validate_json(old)
    assert not definition.is_journey
    assert definition.model_dump_json(by_alias=True) == json.dumps(
        json.loads(old) | {"trigger": {"status_type": "delivery", "from": "any", "to": "shipped"}},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    check_definition(definition, CATALOG)
    schema = CampaignDefinition.model_json_schema(mode="serialization")
    assert {"steps", "exit_conditions", "late_send_minutes", "template"} <= set(schema["properties"])


def test_a_journey_round_trips_with_its_steps() -> None:
    definition = journey()
    dumped = json.loads(definition.model_dump_json(by_alias=True))
    assert dumped["steps"] == [
        step | ({"sender": None} if step["kind"] == "send_sms" and "sender" not in step else {})
        for step in REMINDER["steps"]
    ]
    assert dumped["late_send_minutes"] == 60 and dumped["template"] is None
    assert CampaignDefinition.model_validate(dumped) == definition
    check_definition(definition, CATALOG)


def test_a_journeys_problems_name_each_field() -> None:
    broken = journey(
        template="Hi",
        exit_conditions=[PAID | {"value": "payed"}],
        steps=[
            {"kind": "wait_until", "conditions": [PAID | {"value": "shipped"}], "longest_minutes": 60},
            {"kind": "filter", "conditions": [AWAITING | {"value": "nope"}]},
            {"kind": "send_sms", "template": "{% if %}"},
        ],
    )
    found = problems(broken)
    assert set(found) == {
        "template",
        "exit_conditions.0.value",
        "steps.0.conditions.0.value",
        "steps.1.conditions.0.value",
        "steps.2.template",
    }, found
    assert "'shipped' is a delivery status" in found["steps.0.conditions.0.value"]
    assert problems(journey(steps=[{"kind": "wait_duration", "minutes": 5}])) == {
        "steps": "a journey needs at least one send_sms step"
    }
    assert "template" in problems(CampaignDefinition.model_validate(SEED | {"template": None}))


@pytest.mark.parametrize(
    "step",
    [
        {"kind": "wait_duration", "minutes": 0},
        {"kind": "wait_duration", "minutes": 90 * 24 * 60 + 1},
        {"kind": "wait_until_time", "time": "24:00"},
        {"kind": "wait_until", "conditions": [], "longest_minutes": 60},
        {"kind": "filter", "conditions": []},
        {"kind": "send_sms", "template": ""},
        {"kind": "jump"},
    ],
)
def test_malformed_steps_are_refused_by_shape(step: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        journey(steps=[step])


def test_the_registry_protects_every_code_a_journey_names() -> None:
    stored = Campaign.model_validate(
        REMINDER
        | {
            "id": "c",
            "partner_id": "demo",
            "state": "active",
            "version": 1,
            "created_at": NOW,
            "updated_at": NOW,
            "steps": [
                {"kind": "wait_until", "conditions": [PAID | {"value": "invoice_issued"}], "longest_minutes": 5},
                {"kind": "send_sms", "template": "x"},
            ],
        }
    )
    assert stored.status_codes == ["awaiting_payment", "invoice_issued", "paid"]


# --- a run's way through the steps --------------------------------------------------------------


def test_entering_runs_to_the_first_wait_and_then_each_wait_goes_on_when_due() -> None:
    definition = journey()
    assert evaluate(definition, awaiting(), History(), context()).outcome == Outcome.ENTERED
    entered = advance(definition, ENTRY_STEP, awaiting(), History(), context())
    assert (entered.step, entered.state, entered.due_at) == (0, RunState.WAITING, NOW + timedelta(hours=24))
    later = context(NOW + timedelta(hours=24))
    first = advance(definition, 0, awaiting(), History(), later)
    assert (first.step, first.state, first.due_at) == (3, RunState.WAITING, later.now + timedelta(hours=48))
    assert [(s.step, s.decision.outcome) for s in first.sends] == [(2, Outcome.FIRED)]
    sms = first.sends[0].decision.sms
    assert sms is not None and sms.text == "Order o-1 awaits payment"
    second = advance(definition, 3, awaiting(), History(), context(later.now + timedelta(hours=48)))
    assert (second.state, second.step, [s.step for s in second.sends]) == (RunState.DONE, 6, [5])


def test_exit_conditions_filters_and_caps_take_the_order_out() -> None:
    definition = journey()
    paid = change(to="paid", before="awaiting_payment", payment="paid")
    assert advance(definition, 0, paid, History(), context()).left_reason == LeftReason.EXIT
    left = advance(journey(exit_conditions=[]), 0, paid, History(), context())
    assert (left.state, left.step, left.left_reason) == (RunState.LEFT, 1, LeftReason.FILTERED_OUT)
    assert left.reasons[0].code == "payment_status"
    capped = advance(
        definition,
        0,
        awaiting(),
        History(recent_marketing_sms=1),
        context(frequency_cap={"max_messages": 1, "window_hours": 24}),
    )
    assert (capped.left_reason, capped.step, capped.sends[0].decision.outcome) == (LeftReason.CAPPED, 2, "capped")


def test_two_sends_in_one_go_count_the_first_in_the_cap() -> None:
    twice = journey(steps=[{"kind": "send_sms", "template": "one"}, {"kind": "send_sms", "template": "two"}])
    went = advance(
        twice, ENTRY_STEP, awaiting(), History(), context(frequency_cap={"max_messages": 1, "window_hours": 1})
    )
    assert [s.decision.outcome for s in went.sends] == [Outcome.FIRED, Outcome.CAPPED]


def test_wait_until_goes_on_at_once_when_its_conditions_hold_else_waits_the_longest() -> None:
    definition = journey(
        exit_conditions=[],
        steps=[
            {"kind": "wait_until", "conditions": [PAID], "longest_minutes": 600},
            {"kind": "send_sms", "template": "Thanks"},
        ],
    )
    waits = advance(definition, ENTRY_STEP, awaiting(), History(), context())
    assert (waits.state, waits.step, waits.due_at) == (RunState.WAITING, 0, NOW + timedelta(minutes=600))
    paid = change(to="paid", before="awaiting_payment", payment="paid")
    assert advance(definition, ENTRY_STEP, paid, History(), context()).state == RunState.DONE


def test_wait_until_a_time_of_day_in_the_recipients_zone() -> None:
    definition = journey(steps=[{"kind": "wait_until_time", "time": "10:00"}, {"kind": "send_sms", "template": "x"}])
    # 12:00 in Moscow: the next 10:00 there is tomorrow, 07:00 UTC
    went = advance(definition, ENTRY_STEP, awaiting(), History(), context())
    assert went.due_at == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def test_the_next_local_time_across_daylight_saving_changes() -> None:
    berlin = "Europe/Berlin"
    # Saturday 28 March 2026, 10:00 CET (+1); the clocks go forward that night: 09:00 on Sunday is CEST (+2).
    assert next_local_time(datetime(2026, 3, 28, 9, 0, tzinfo=UTC), 9, 0, berlin) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )
    # Before the time on the same day: today.
    assert next_local_time(datetime(2026, 3, 28, 7, 0, tzinfo=UTC), 9, 0, berlin) == datetime(
        2026, 3, 28, 8, 0, tzinfo=UTC
    )
    # Back in October (CEST -> CET): 09:00 on Sunday 25 October is 08:00 UTC.
    assert next_local_time(datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 9, 0, berlin) == datetime(
        2026, 10, 25, 8, 0, tzinfo=UTC
    )
    # 02:30 does not exist on 29 March in Berlin: it comes as 03:30 CEST, 01:30 UTC; never before now.
    skipped = next_local_time(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2, 30, berlin)
    assert skipped == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_resuming_sends_late_within_the_window_only() -> None:
    due = NOW
    assert resumed(due, NOW + timedelta(minutes=60), 60)
    assert not resumed(due, NOW + timedelta(minutes=61), 60)


# --- figures and the timeline ------------------------------------------------------------------


def test_figures_count_each_step_of_the_current_version_and_orders_per_version() -> None:
    counts = [
        RunCount(version=3, step=0, state=RunState.WAITING, left_reason=None, n=5),  # waiting 24 h
        RunCount(version=3, step=3, state=RunState.WAITING, left_reason=None, n=2),  # reminded once
        RunCount(version=4, step=1, state=RunState.LEFT, left_reason="filtered_out", n=1),
        RunCount(version=3, step=3, state=RunState.LEFT, left_reason="exit", n=4),
        RunCount(version=3, step=6, state=RunState.DONE, left_reason=None, n=1),
        RunCount(version=1, step=0, state=RunState.HELD, left_reason=None, n=7),  # an older definition
    ]
    figures = journey_figures(journey(), [1, 3], counts)
    by_step = {f.index: (f.entered, f.waiting, f.exited, f.filtered_out, f.sent) for f in figures.steps}
    assert by_step == {
        0: (13, 5, 0, 0, 0),
        1: (8, 0, 0, 1, 0),
        2: (7, 0, 0, 0, 7),
        3: (7, 2, 4, 0, 0),
        4: (1, 0, 0, 0, 0),
        5: (1, 0, 0, 0, 1),
    }
    assert (figures.exited_total, figures.waiting_total) == (4, 14)
    assert [(v.version, v.orders_in_journey) for v in figures.versions] == [(1, 7), (3, 7)]


def test_the_timeline_plays_the_sample_order_through_the_journey() -> None:
    entries = timeline(journey(), awaiting(), History(), context())
    assert [(e.after_minutes, e.step, e.kind) for e in entries] == [
        (0, None, "entered"),
        (0, 0, "wait"),
        (1440, 1, "filter"),
        (1440, 2, "send"),
        (1440, 3, "wait"),
        (4320, 4, "filter"),
        (4320, 5, "send"),
        (4320, None, "done"),
    ]
    assert entries[3].text == "Order o-1 awaits payment"
    paid = change(to="paid", before="awaiting_payment", payment="paid")
    stops = timeline(journey(exit_conditions=[]), paid, History(), context())
    assert [e.kind for e in stops] == ["entered", "wait", "leave"] and "payment status is paid" in stops[-1].detail
    assert [r.code for r in stops[-1].reasons] == ["payment_status"]  # the code a console puts in its own words
