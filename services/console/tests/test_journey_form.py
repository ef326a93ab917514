"""The journey editor's form <-> JSON mapping (issue 33), without a browser or a service: the fields as a browser
posts them (steps in the order of their blocks on the page, each condition with its owner) to the campaigns API's
definition and back, a one-step campaign left exactly as it was, a step added and a campaign turned into a journey,
the API's field paths placed on the block and field they belong to, what the editor checks itself, and the
one-sentence summary of a journey in both languages."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData, UploadFile

from console import explain
from console.i18n import Formats
from console.pages.campaigns import (
    NO_CONDITIONS,
    NO_DURATION,
    NO_SEND_STEP,
    NO_TEXT,
    CampaignForm,
    StepRow,
    _figures_context,
    _timeline,
)
from console.web import Page, gettext_of

AWAITING = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "awaiting_payment"}
PAID = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}
REMINDER: dict[str, Any] = {
    "name": "Payment reminder",
    "trigger": {"status_type": "payment", "from": "any", "to": "awaiting_payment"},
    "filters": [],
    "reentry": "once_per_order",
    "transactional": False,
    "quiet_hours": "partner_default",
    "steps": [
        {"kind": "wait_duration", "minutes": 1440},
        {"kind": "filter", "conditions": [AWAITING]},
        {"kind": "send_sms", "template": "Order {{ order.id }} awaits payment", "sender": "DemoShop"},
        {"kind": "wait_duration", "minutes": 2880},
        {"kind": "filter", "conditions": [AWAITING]},
        {"kind": "send_sms", "template": "Last reminder: {{ order.id }}", "sender": None},
    ],
    "exit_conditions": [PAID],
    "late_send_minutes": 60,
}
ONE_STEP: dict[str, Any] = {
    "name": "Shipped",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [PAID],
    "template": "On its way",
    "sender": "DemoShop",
    "reentry": "once_per_order",
    "transactional": False,
    "quiet_hours": "partner_default",
}
NAMES = {
    "en": {"awaiting_payment": "Awaiting payment", "paid": "Paid"},
    "ru": {"awaiting_payment": "Ожидает оплаты", "paid": "Оплачен"},
}


def test_a_journey_goes_from_the_api_to_the_form_and_back_unchanged() -> None:
    form = CampaignForm.of(REMINDER | {"id": "x", "version": 3, "state": "draft"})
    assert [step.kind for step in form.steps] == [s["kind"] for s in REMINDER["steps"]]
    assert (form.steps[0].days, form.steps[0].hours, form.steps[0].minutes) == ("1", "0", "0")
    assert form.steps[1].conditions[0].owner == form.steps[1].key
    assert form.problems() == {}
    assert form.definition() == REMINDER


def test_a_one_step_campaign_keeps_todays_definition() -> None:
    form = CampaignForm.of(ONE_STEP)
    assert form.steps == [] and form.definition() == ONE_STEP  # no steps, exits or late-send keys added


def posted(fields: list[tuple[str, str]]) -> FormData:
    base: list[tuple[str, str | UploadFile]] = [
        ("name", "Reminder"),
        ("status_type", "payment"),
        ("from_mode", "any"),
        ("to_codes", "awaiting_payment"),
    ]
    return FormData([*base, *fields])


def condition_fields(key: str, owner: str, code: str) -> list[tuple[str, str]]:
    return [
        (f"filter_kind_{key}", "order_status"),
        (f"filter_owner_{key}", owner),
        (f"filter_type_{key}", "payment"),
        (f"filter_op_{key}", "eq"),
        (f"filter_codes_{key}", code),
    ]


def test_the_posted_form_gives_the_steps_in_the_order_of_their_blocks() -> None:
    # the blocks as the page has them after "Move up" put the send before the filter; the exit's row comes first
    fields = [
        *condition_fields("ex1", "exit", "paid"),
        ("step_key", "s2"),
        ("step_kind_s2", "send_sms"),
        ("step_template_s2", "Pay {{ order.id }}"),
        ("step_sender_s2", ""),
        ("step_key", "s1"),
        ("step_kind_s1", "filter"),
        *condition_fields("c1", "s1", "awaiting_payment"),
        ("step_key", "s3"),
        ("step_kind_s3", "wait_duration"),
        ("step_days_s3", "2"),
        ("step_hours_s3", "3"),
        ("step_minutes_s3", ""),
        ("step_key", "s4"),
        ("step_kind_s4", "wait_until"),
        *condition_fields("c2", "s4", "paid"),
        ("step_days_s4", ""),
        ("step_hours_s4", "6"),
        ("step_minutes_s4", "30"),
        ("step_key", "s5"),
        ("step_kind_s5", "wait_until_time"),
        ("step_time_s5", "10:30"),
        ("late_send_minutes", "15"),
    ]
    definition = CampaignForm.parse(posted(fields)).definition()
    assert "template" not in definition and "sender" not in definition
    assert definition["filters"] == []  # the conditions of the exits and the steps are not entry filters
    assert definition["exit_conditions"] == [PAID]
    assert definition["steps"] == [
        {"kind": "send_sms", "template": "Pay {{ order.id }}", "sender": None},
        {"kind": "filter", "conditions": [AWAITING]},
        {"kind": "wait_duration", "minutes": 2 * 1440 + 3 * 60},
        {"kind": "wait_until", "conditions": [PAID], "longest_minutes": 6 * 60 + 30},
        {"kind": "wait_until_time", "time": "10:30"},
    ]
    assert definition["late_send_minutes"] == 15


def test_add_a_step_turns_a_one_step_campaign_into_a_journey_whose_send_is_its_text() -> None:
    journey = CampaignForm.of(ONE_STEP).to_journey()
    assert journey.definition()["steps"] == [{"kind": "send_sms", "template": "On its way", "sender": "DemoShop"}]
    assert journey.definition()["filters"] == [PAID]  # the entry filters stay
    send = journey.steps[0].key
    waited = journey.add_step("wait_duration", "start")
    assert [s.kind for s in waited.steps] == ["wait_duration", "send_sms"]
    after = waited.add_step("filter", send)
    assert [s.kind for s in after.steps] == ["wait_duration", "send_sms", "filter"]
    assert after.definition()["steps"][0] == {"kind": "wait_duration", "minutes": 1440}  # a new wait: one day


def test_the_apis_field_paths_land_on_their_block_and_field() -> None:
    form = CampaignForm.of(REMINDER)
    steps, exit_row = form.steps, form.exits[0]
    assert form.field_of("steps.2.template") == f"step_{steps[2].key}_template"
    assert form.field_of("definition.steps.5.sender") == f"step_{steps[5].key}_sender"
    assert form.field_of("steps.5.send_sms.template") == f"step_{steps[5].key}_template"  # pydantic's union tag
    assert form.field_of("steps.1.filter.conditions.0.order_status.value") == f"filter_{steps[1].conditions[0].key}"
    assert form.field_of("steps.0.minutes") == f"step_{steps[0].key}"
    assert form.field_of("steps.1") == f"step_{steps[1].key}"
    assert form.field_of("steps.4.conditions.0.value") == f"filter_{steps[4].conditions[0].key}"
    assert form.field_of("exit_conditions.0.value") == f"filter_{exit_row.key}"
    assert form.field_of("steps.9.template") == "steps"  # a step the form does not have: the steps as a whole
    assert form.field_of("late_send_minutes") == "late_send_minutes"


def test_what_the_editor_checks_itself_by_block() -> None:
    wait = StepRow(key="w", kind="wait_duration", days="", hours="", minutes="")
    too_long = StepRow(key="l", kind="wait_duration", days="91")
    until = StepRow(key="u", kind="wait_until")
    send = StepRow(key="s", kind="send_sms", template="  ")
    form = CampaignForm(to_codes=["awaiting_payment"], steps=[wait, too_long, until, send])
    assert form.problems() == {
        "step_w": NO_DURATION,
        "step_l": NO_DURATION,
        "step_u": NO_CONDITIONS,
        "step_s_template": NO_TEXT,
    }
    no_send = CampaignForm(to_codes=["awaiting_payment"], steps=[StepRow(key="w", kind="wait_duration")])
    assert no_send.problems() == {"steps": NO_SEND_STEP}
    assert form.complete().steps == []  # the preview leaves out the steps not filled in


def summary(definition: dict[str, Any], language: str) -> str:
    return explain.summary(gettext_of(language), language, definition, NAMES[language])


def test_a_journey_in_one_sentence_in_both_languages() -> None:
    assert summary(REMINDER, "en") == (
        "When the payment status changes to Awaiting payment: wait 1 day, then if the payment status is Awaiting"
        " payment, send an SMS from DemoShop, then wait 2 days, then if the payment status is Awaiting payment, send"
        " an SMS, once per order; leave as soon as the payment status is Paid."
    )
    assert summary(REMINDER, "ru") == (
        "Когда статус оплаты меняется на «Ожидает оплаты»: подождать 1 день, затем, если статус оплаты — «Ожидает"
        " оплаты», отправить SMS от имени DemoShop, затем подождать 2 дня, затем, если статус оплаты — «Ожидает"
        " оплаты», отправить SMS — один раз на заказ; выйти из цепочки, как только статус оплаты — «Оплачен»."
    )


def test_waits_until_a_time_or_a_condition_in_words() -> None:
    shape = REMINDER | {
        "steps": [
            {"kind": "wait_until", "conditions": [PAID], "longest_minutes": 3 * 1440 + 90},
            {"kind": "wait_until_time", "time": "10:00"},
            {"kind": "send_sms", "template": "x", "sender": None},
        ],
        "exit_conditions": [],
    }
    assert summary(shape, "en") == (
        "When the payment status changes to Awaiting payment: wait until the payment status is Paid, at most 3 days"
        " 1 hour 30 minutes, then wait until 10:00, then send an SMS, once per order."
    )
    assert summary(shape, "ru") == (
        "Когда статус оплаты меняется на «Ожидает оплаты»: подождать, пока статус оплаты — «Оплачен», но не больше"
        " чем 3 дня 1 час 30 минут, затем подождать до 10:00, затем отправить SMS — один раз на заказ."
    )


def test_each_steps_figures_and_the_orders_on_older_versions() -> None:
    campaign = REMINDER | {"id": "c", "version": 9}  # state changes count in the campaign's version too
    form = CampaignForm.of(campaign)
    figures = [
        {"index": i, "kind": s["kind"], "entered": 10 - i, "waiting": 1, "exited": 0, "filtered_out": 0, "sent": 0}
        for i, s in enumerate(REMINDER["steps"])
    ]
    journey = {
        "steps": figures,
        "exited_total": 0,
        "waiting_total": 6,
        "versions": [
            {"version": 3, "orders_in_journey": 12},
            {"version": 4, "orders_in_journey": 0},
            {"version": 5, "orders_in_journey": 7},
            {"version": 2, "orders_in_journey": 1},
        ],
    }
    shown = _figures_context(form, campaign, journey)
    assert [shown["figures"][step.key]["entered"] for step in form.steps] == [10, 9, 8, 7, 6, 5]
    # the current (latest) definition's orders are not "still on" an older one; a version with none is left out
    assert shown["older_versions"] == [{"version": 3, "orders_in_journey": 12}, {"version": 2, "orders_in_journey": 1}]
    assert _figures_context(form, campaign, None) == {"figures": {}, "older_versions": []}


def test_why_the_sample_order_leaves_is_in_the_users_language() -> None:
    """The service's reasons come as codes; the timeline says them in the user's words, not the service's English."""
    leaves = {
        "timeline": [
            {"after_minutes": 0, "step": None, "kind": "entered", "detail": "the order enters the journey"},
            {"after_minutes": 0, "step": 0, "kind": "wait", "detail": "waits 1440 minutes"},
            {
                "after_minutes": 1440,
                "step": 1,
                "kind": "leave",
                "detail": "filtered_out: payment status is paid; wanted awaiting_payment",
                "reasons": [{"code": "payment_status", "detail": "payment status is paid", "condition": 0}],
            },
        ]
    }
    page = Page.__new__(Page)
    page.fmt = Formats(language="ru", time_zone="Europe/Moscow")
    left = _timeline(page, leaves, CampaignForm.of(REMINDER))[-1]["detail"]
    ru = gettext_of("ru")
    assert ru(explain.STATUS_REASON, type=ru(explain.STATUS_TYPE_LABELS["payment"])) in left
    assert "payment status" not in left and "wanted" not in left
