"""The campaign rules without I/O: triggers, filters with reasons, policies, quiet hours, templates, SMS segments."""

from __future__ import annotations

import time as clock
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from campaigns.domain import (
    TEMPLATE_VALUES,
    CampaignDefinition,
    CampaignIndex,
    CampaignState,
    Context,
    Decision,
    History,
    InvalidCampaign,
    Outcome,
    PartnerSettings,
    PlannedSms,
    StateConflict,
    Trigger,
    check_definition,
    check_transition,
    evaluate,
    render_text,
    send_command,
    template_variables,
)
from campaigns.recipients import PhoneProblem, SendWindow, not_before, recipient_zone, sms_phone
from campaigns.templating import LIMITS, TemplateLimit, TemplateProblem, check_template, render
from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.sms import SmsEncoding
from contracts.sms_text import TEMPLATE_VARIABLES, sms_parts
from contracts.statuses import CurrentStatuses, StatusDefinition, StatusRef, StatusType
from devtools.scenario import example_status_list

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 12:00 in Moscow, 10:00 in Berlin
NAMES = {s["code"]: s["name"] for s in example_status_list()}
CATALOG = {
    s["code"]: StatusDefinition(partner_id="demo", version=1, created_at=NOW, updated_at=NOW, **s)
    for s in example_status_list()
}
SEED: dict[str, Any] = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name | default: 'Hello' }}, order {{ order.id }} is {{ to_status.name }}",
}


def campaign(**changes: Any) -> CampaignDefinition:
    return CampaignDefinition.model_validate(SEED | changes)


def ref(code: str | None) -> StatusRef | None:
    return StatusRef(code=code, name=NAMES[code]) if code else None


def change(
    to: str = "shipped",
    before: str | None = "at_pickup_point",
    payment: str | None = "paid",
    phone: str | None = "+7 916 123-45-67",
    consent: bool = True,
    amount: str = "1500.00",
    name: str | None = "Анна",
) -> OrderStatusChanged:
    status_type = CATALOG[to].type
    statuses = {"general": ref("accepted"), "payment": ref(payment), str(status_type): ref(to)}
    customer = Customer(id="c-1", phone=phone, name=name, sms_consent=consent)
    order = OrderSnapshot(
        order_id="o-1",
        statuses=CurrentStatuses.model_validate(statuses),
        amount=Decimal(amount),
        currency="RUB",
        customer=customer,
        placed_at=NOW,
    )
    return OrderStatusChanged(
        order_id="o-1",
        status_type=status_type,
        from_status=ref(before),
        to_status=StatusRef(code=to, name=NAMES[to]),
        to_include_in_analytics=False,
        sequence=3,
        order=order,
        occurred_at=NOW,
    )


def context(now: datetime = NOW, **partner: Any) -> Context:
    return Context(now, PartnerSettings(**partner), default_region="RU", default_zone="Europe/Moscow")


def planned(decision: Decision) -> PlannedSms:
    assert decision.sms is not None, decision
    return decision.sms


def decide(definition: CampaignDefinition, event: OrderStatusChanged, **history: Any) -> Any:
    return evaluate(definition, event, History(**history), context())


# --- triggers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_", "before", "fires"),
    [
        ("any", "at_pickup_point", True),
        ("any", None, True),
        ("none", None, True),
        ("none", "at_pickup_point", False),
        ("at_pickup_point", "at_pickup_point", True),
        ("at_pickup_point", "at_delivery_point", False),
        (["at_pickup_point", "at_delivery_point"], "at_delivery_point", True),
        (["at_pickup_point"], None, False),
    ],
)
def test_trigger_from_forms(from_: Any, before: str | None, fires: bool) -> None:
    trigger = Trigger.model_validate({"status_type": "delivery", "from": from_, "to": ["shipped", "delivered"]})
    assert trigger.matches(StatusType.DELIVERY, before, "shipped") is fires
    assert not trigger.matches(StatusType.DELIVERY, before, "at_pickup_point")  # not a target
    assert not trigger.matches(StatusType.PAYMENT, before, "shipped")  # another type


def test_not_triggered_is_explained() -> None:
    decision = decide(campaign(), change(to="delivered"))
    assert decision.outcome == Outcome.NOT_TRIGGERED and "delivered" in decision.reasons[0].detail


# --- filters: each failing condition is a reason ---------------------------------------------------


def test_the_seed_campaign_fires_with_a_rendered_gsm_or_ucs2_text() -> None:
    decision = decide(campaign(), change())
    assert decision.outcome == Outcome.FIRED
    assert planned(decision).text == "Анна, order o-1 is Отгружен"
    assert planned(decision).phone == "+79161234567" and planned(decision).parts.encoding == SmsEncoding.UCS2
    assert planned(decision).not_before is None  # 12:00 in Moscow


def test_every_failing_condition_is_recorded_with_its_reason() -> None:
    filters = [
        {"kind": "order_status", "status_type": "payment", "op": "in", "value": ["paid"]},
        {"kind": "order_status", "status_type": "general", "op": "not_in", "value": ["accepted"]},
        {"kind": "has_phone"},
        {"kind": "sms_consent"},
        {"kind": "amount", "min": "2000"},
    ]
    decision = decide(campaign(filters=filters), change(payment="awaiting_payment", phone=None, consent=False))
    assert decision.outcome == Outcome.FILTERED_OUT
    assert [(r.condition, r.code) for r in decision.reasons] == [
        (0, "payment_status"),
        (1, "general_status"),
        (2, "no_phone"),
        (3, "no_sms_consent"),
        (4, "amount_below_min"),
    ]
    assert "awaiting_payment" in decision.reasons[0].detail


@pytest.mark.parametrize(
    ("condition", "event", "reason"),
    [
        ({"kind": "amount", "max": "1000"}, change(), "amount_above_max"),
        ({"kind": "amount", "min": "1", "currency": "EUR"}, change(), "currency_mismatch"),
        ({"kind": "has_phone"}, change(phone="12345"), "invalid_phone"),
        ({"kind": "has_phone"}, change(phone="+7 495 123 45 67"), "not_mobile"),
        ({"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}, change(payment=None), None),
    ],
)
def test_single_condition_reasons(condition: dict[str, Any], event: OrderStatusChanged, reason: str | None) -> None:
    decision = decide(campaign(filters=[condition]), event)
    assert [r.code for r in decision.reasons] == [reason or "payment_status"]


def test_amount_within_range_passes() -> None:
    decision = decide(
        campaign(filters=[{"kind": "amount", "min": 1000, "max": "1500.00", "currency": "RUB"}]), change()
    )
    assert decision.outcome == Outcome.FIRED


def test_a_customer_without_a_usable_phone_is_filtered_even_without_a_phone_condition() -> None:
    assert decide(campaign(filters=[]), change(phone=None)).reasons[0].code == "no_phone"
    assert decide(campaign(filters=[]), change(phone="+7 495 123 45 67")).reasons[0].code == "not_mobile"


def test_a_text_the_notifier_cannot_take_is_a_failed_evaluation() -> None:
    too_long = campaign(template="{% for n in (1..850) %}xx{% endfor %}")
    decision = decide(too_long, change())
    assert decision.outcome == Outcome.FAILED and "1700 characters" in decision.reasons[0].detail
    empty = decide(campaign(template="{{ customer.name }}"), change(name=None))
    assert empty.outcome == Outcome.FAILED and "empty" in empty.reasons[0].detail


# --- re-entry and frequency cap ------------------------------------------------------------------


def test_reentry_once_per_order_or_every_time() -> None:
    assert decide(campaign(), change(), fired_for_order=True).outcome == Outcome.OUTSIDE_REENTRY
    every_time = campaign(reentry="every_time")
    assert decide(every_time, change(), fired_for_order=True).outcome == Outcome.FIRED


def test_frequency_cap_and_the_transactional_opt_out() -> None:
    cap = {"max_messages": 2, "window_hours": 24}
    capped = evaluate(campaign(), change(), History(recent_marketing_sms=2), context(frequency_cap=cap))
    assert capped.outcome == Outcome.CAPPED and "cap 2" in capped.reasons[0].detail
    below = evaluate(campaign(), change(), History(recent_marketing_sms=1), context(frequency_cap=cap))
    assert below.outcome == Outcome.FIRED
    service = evaluate(
        campaign(transactional=True), change(), History(recent_marketing_sms=9), context(frequency_cap=cap)
    )
    assert service.outcome == Outcome.FIRED


# --- quiet hours in the recipient's zone ---------------------------------------------------------

LATE = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)  # 22:30 in Moscow, 20:30 in Berlin


def test_quiet_hours_hold_until_the_window_opens_in_the_recipients_zone() -> None:
    moscow = evaluate(campaign(), change(), History(), context(LATE))
    assert planned(moscow).time_zone == "Europe/Moscow"
    assert planned(moscow).not_before == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 09:00 Moscow
    berlin = evaluate(campaign(), change(phone="+49 1512 3456789"), History(), context(LATE))
    assert planned(berlin).time_zone == "Europe/Berlin" and planned(berlin).not_before is None  # 20:30 there
    immediate = evaluate(campaign(quiet_hours="deliver_immediately"), change(), History(), context(LATE))
    assert planned(immediate).not_before is None
    custom = campaign(quiet_hours={"start": "10:00", "end": "23:00"})
    assert planned(evaluate(custom, change(), History(), context(LATE))).not_before is None
    no_quiet_hours = evaluate(campaign(), change(), History(), context(LATE, quiet_hours=None))
    assert planned(no_quiet_hours).not_before is None


def test_send_window_edges_and_midnight_spans() -> None:
    day = SendWindow(start=time(9), end=time(21))
    early = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 08:00 Moscow: the same day's 09:00
    assert not_before(early, day, "Europe/Moscow") == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    assert not_before(datetime(2026, 3, 2, 6, 0, tzinfo=UTC), day, "Europe/Moscow") is None  # 09:00 sharp
    assert not_before(datetime(2026, 3, 2, 18, 0, tzinfo=UTC), day, "Europe/Moscow") is not None  # 21:00 sharp
    night = SendWindow(start=time(22), end=time(2))
    assert night.allows(time(23)) and night.allows(time(1)) and not night.allows(time(12))


def test_phone_normalisation_and_zone() -> None:
    phone = sms_phone("8 (916) 123-45-67", "RU")
    assert phone.e164 == "+79161234567" and len(phone.time_zones) > 1
    assert recipient_zone(phone, "Europe/Moscow") == "Europe/Moscow"
    assert recipient_zone(sms_phone("+1 650 253 0000", "RU"), "Europe/Moscow") == "America/Los_Angeles"
    with pytest.raises(PhoneProblem) as problem:
        sms_phone("+7 423 222 2222", "RU")
    assert problem.value.reason == "not_mobile"


def test_send_command_is_deterministic_and_expires_after_the_hold() -> None:
    from campaigns.domain import Campaign

    stored = Campaign.model_validate(
        SEED
        | {"id": "camp-1", "partner_id": "demo", "state": "active", "version": 1, "created_at": NOW}
        | {"updated_at": NOW}
    )
    decision = evaluate(stored, change(), History(), context(LATE))
    first = send_command(stored, "evt-1", change(), planned(decision), LATE, timedelta(hours=24))
    again = send_command(stored, "evt-1", change(), planned(decision), LATE + timedelta(minutes=5), timedelta(hours=24))
    assert first.idempotency_key == again.idempotency_key
    assert first.not_before == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert first.expires_at == first.not_before + timedelta(hours=24)


# --- templates and save-time validation ----------------------------------------------------------


def test_unknown_variables_and_filters_fail_at_save_naming_the_line() -> None:
    with pytest.raises(TemplateProblem) as unknown:
        check_template("Hello {{ customer.name }}\nYour order {{ order.number }} is on its way")
    assert unknown.value.line == 2 and "order.number" in unknown.value.message
    with pytest.raises(TemplateProblem) as bad_filter:
        check_template("{{ order.id | shout }}")
    assert "shout" in bad_filter.value.message
    with pytest.raises(TemplateProblem) as syntax:
        check_template("line one\n\n{% if order.id %}unclosed")
    assert syntax.value.line >= 3
    check_template("{% if from_status.name != '' %}{{ from_status.name }} -> {% endif %}{{ to_status.name }}")


def test_render_is_strict_and_fills_every_variable() -> None:
    text = render(
        "{{ order.amount }} {{ order.currency }} {{ status_type }}",
        {
            "order": {"amount": "10.50", "currency": "RUB"},
            "status_type": "delivery",
        },
    )
    assert text == "10.50 RUB delivery"
    with pytest.raises(TemplateProblem):
        render("{{ customer.name }}", {})


def test_a_plain_template_reads_each_variable_as_liquid_does() -> None:
    """A plain template's values come from TEMPLATE_VALUES, Liquid's from template_variables: the same, for each."""
    assert tuple(TEMPLATE_VALUES) == TEMPLATE_VARIABLES
    assert template_variables(change()) == {
        "customer": {"name": "Анна"},
        "order": {"id": "o-1", "amount": "1500.00", "currency": "RUB"},
        "from_status": {"code": "at_pickup_point", "name": NAMES["at_pickup_point"]},
        "to_status": {"code": "shipped", "name": NAMES["shipped"]},
        "status_type": "delivery",
    }
    for event in (change(), change(before=None, name=None)):
        variables = template_variables(event)
        for path in TEMPLATE_VARIABLES:
            source = f"<{{{{ {path} }}}}>"
            assert render_text(source, event) == render(source, variables) == render(f"{source}{{{{ '' }}}}", variables)


# Each hostile template with the limit it must hit, already with the sample data a save renders it with.
HOSTILE_TEMPLATES = {
    "a huge loop": ("{% for i in (1..100000000) %}x{% endfor %}", "loop iterations"),
    "loops in a row": ("{% for i in (1..999) %}{% endfor %}" * 5, "loop iterations"),
    "a string doubled": ("{% assign s = 'ab' %}" + "{% assign s = s | append: s %}" * 30, "bytes"),
    "blocks nested": ("{% if true %}" * 12 + "x" + "{% endif %}" * 12, "nested"),
    "filters in a loop": (
        "{% assign s = '" + "x" * 1000 + "' %}{% for i in (1..900) %}{{ s | split: '' | sort | join: '' | size }}"
        "{% endfor %}",
        "filter applications",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_TEMPLATES)
def test_a_template_that_exceeds_a_limit_with_sample_data_is_refused_at_save(
    name: str, record_property: Callable[[str, object], None]
) -> None:
    source, limit = HOSTILE_TEMPLATES[name]
    started = clock.process_time()
    with pytest.raises(TemplateLimit) as refused:
        check_template(source)
    record_property("check_cpu_seconds", clock.process_time() - started)  # reported, not asserted: the limits bound it
    assert limit in refused.value.message and refused.value.line is None
    with pytest.raises(InvalidCampaign) as invalid:
        check_definition(campaign(template=source), CATALOG)
    assert [p.loc for p in invalid.value.problems] == [("template",)]


def test_the_loop_limit_counts_every_iteration_of_a_render() -> None:
    check_template(f"{{% for i in (1..{LIMITS.loop_iterations}) %}}{{% endfor %}}")
    with pytest.raises(TemplateLimit):
        check_template(f"{{% for i in (1..{LIMITS.loop_iterations + 1}) %}}{{% endfor %}}")
    half = LIMITS.loop_iterations // 2
    with pytest.raises(TemplateLimit):  # two loops in a row, each within the limit, are not
        check_template(f"{{% for i in (1..{half}) %}}{{% endfor %}}{{% for i in (0..{half}) %}}{{% endfor %}}")


LETTERS = "{% assign letters = customer.name | split: '' %}"


@pytest.mark.parametrize(
    ("body", "name", "limit"),
    [
        (  # 52 letters: 52 + 52 * 52 = 2,756 iterations
            "{% for a in letters %}{% for b in letters %}{{ a }}{% endfor %}{% endfor %}",
            "Анна-Мария " * 3 + "Константинопольская",
            "loop iterations",
        ),
        (  # 25 letters: 650 iterations, but 25 * 25 times the name is 31 kB of output
            "{% for a in letters %}{% for b in letters %}{{ customer.name }}{% endfor %}{% endfor %}",
            "Александра Константиновна",
            "bytes of output",
        ),
    ],
)
def test_a_template_that_exceeds_a_limit_only_on_real_data_fails_that_evaluation(
    body: str, name: str, limit: str
) -> None:
    definition = campaign(template=LETTERS + body)
    check_definition(definition, CATALOG)  # with a four-letter sample name it is cheap
    assert decide(definition, change(name="Анна")).outcome == Outcome.FIRED
    decision = decide(definition, change(name=name))
    assert decision.outcome == Outcome.FAILED
    assert [r.code for r in decision.reasons] == ["template_limit"] and limit in decision.reasons[0].detail


def test_check_definition_names_each_bad_code_and_the_template_line() -> None:
    bad = campaign(
        trigger={"status_type": "delivery", "from": ["paid"], "to": ["shipped", "teleported"]},
        filters=[{"kind": "order_status", "status_type": "payment", "op": "in", "value": ["shipped"]}],
        template="Hi\n{{ custmer.name }}",
    )
    with pytest.raises(InvalidCampaign) as invalid:
        check_definition(bad, CATALOG)
    problems = [(p.loc, p.message, p.line) for p in invalid.value.problems]
    assert problems == [
        (("trigger", "from"), "'paid' is a payment status, not delivery", None),
        (("trigger", "to"), "unknown status code 'teleported'", None),
        (("filters", 0, "value"), "'shipped' is a delivery status, not payment", None),
        (("template",), problems[3][1], 2),
    ]
    assert "custmer.name" in problems[3][1]
    check_definition(campaign(), CATALOG)


def test_state_transitions() -> None:
    assert check_transition(CampaignState.DRAFT, CampaignState.ACTIVE)
    assert not check_transition(CampaignState.ACTIVE, CampaignState.ACTIVE)
    with pytest.raises(StateConflict):
        check_transition(CampaignState.ARCHIVED, CampaignState.ACTIVE)
    with pytest.raises(StateConflict):
        check_transition(CampaignState.DRAFT, CampaignState.PAUSED)


def test_a_campaign_reacts_only_to_changes_published_since_its_activation() -> None:
    from campaigns.domain import Campaign

    base = SEED | {"id": "c1", "partner_id": "demo", "version": 1, "created_at": NOW, "updated_at": NOW}
    active = Campaign.model_validate(base | {"state": "active", "activated_at": NOW})
    assert active.reacts_to(NOW) and active.reacts_to(NOW + timedelta(days=1))
    assert not active.reacts_to(NOW - timedelta(seconds=1))
    assert not Campaign.model_validate(base | {"state": "paused", "activated_at": NOW}).reacts_to(NOW)
    assert not Campaign.model_validate(base | {"state": "draft"}).reacts_to(NOW)


def test_index_follows_state_and_edits() -> None:
    from campaigns.domain import Campaign

    base = SEED | {"id": "c1", "partner_id": "demo", "created_at": NOW, "updated_at": NOW}
    index = CampaignIndex()
    index.put(Campaign.model_validate(base | {"state": "active", "version": 2}))
    assert len(index.matching("demo", StatusType.DELIVERY, "shipped")) == 1
    assert index.matching("other", StatusType.DELIVERY, "shipped") == []
    index.put(Campaign.model_validate(base | {"state": "paused", "version": 1}))  # older: ignored
    assert len(index.matching("demo", StatusType.DELIVERY, "shipped")) == 1
    moved = base | {"trigger": {"status_type": "delivery", "to": "delivered"}, "state": "active", "version": 3}
    index.put(Campaign.model_validate(moved))
    assert index.matching("demo", StatusType.DELIVERY, "shipped") == []
    assert len(index.matching("demo", StatusType.DELIVERY, "delivered")) == 1
    index.put(Campaign.model_validate(moved | {"state": "paused", "version": 4}))
    assert len(index) == 0


# --- SMS encoding and segments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, SmsEncoding.GSM7, 1),
        ("a" * 161, SmsEncoding.GSM7, 2),
        ("a" * 306, SmsEncoding.GSM7, 2),
        ("a" * 307, SmsEncoding.GSM7, 3),
        ("€" * 80, SmsEncoding.GSM7, 1),  # extension characters cost two septets
        ("€" * 81, SmsEncoding.GSM7, 2),
        ("a" * 152 + "€", SmsEncoding.GSM7, 1),
        ("a" * 152 + "€" + "a" * 8, SmsEncoding.GSM7, 2),  # 162 septets; the escape pair moves whole
        ("Я" * 70, SmsEncoding.UCS2, 1),
        ("Я" * 71, SmsEncoding.UCS2, 2),
        ("Я" * 134, SmsEncoding.UCS2, 2),
        ("Я" * 135, SmsEncoding.UCS2, 3),
        ("😀" * 35, SmsEncoding.UCS2, 1),  # surrogate pairs: two code units each
        ("a" * 66 + "😀" + "a" * 3, SmsEncoding.UCS2, 2),
    ],
)
def test_sms_segments(text: str, encoding: SmsEncoding, segments: int) -> None:
    parts = sms_parts(text)
    assert (parts.encoding, parts.segments) == (encoding, segments)
