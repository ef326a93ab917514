"""What the console shows instead of the services' codes and developer messages: words for a marketer in both
languages, saying what to do; and what the campaign editor checks itself before asking the campaigns service."""

from __future__ import annotations

from starlette.datastructures import FormData

from console import explain
from console.pages.campaigns import AUTO, CampaignForm, FilterRow, _sample_status
from console.web import gettext_of

EN, RU = gettext_of("en"), gettext_of("ru")


def test_reason_codes_are_words_in_the_users_language() -> None:
    assert explain.reason(EN, "no_consent").startswith("The customer has not agreed to marketing SMS")
    assert explain.reason(RU, "no_consent").startswith("Клиент не давал согласия на рекламные SMS")
    assert explain.reason(EN, "payment_status") == "The order's Payment status is not one the condition asks for."
    assert explain.reason(RU, "payment_status") == "Статус «Оплата» у заказа не тот, что требует условие."
    assert explain.reason(EN, "some_new_code") == "some_new_code"  # a newer service's code, as it is


def test_template_problems_say_the_line_once_and_how_to_fix_them() -> None:
    syntax = explain.template_problem(EN, "expected '}}', found 'eof'", 2)
    assert syntax.startswith("Line 2: The template's markup is broken here (expected '}}', found 'eof')")
    assert syntax.count("2") == 1 and "{% endif %}" in syntax
    unknown = explain.template_problem(RU, "unknown variable 'order.number'; known: order.id, customer.name", 1)
    assert unknown == "Строка 1: Переменной «order.number» нет. Можно использовать: order.id, customer.name."
    assert "Shorten it" in explain.template_problem(EN, "the text has 1700 characters; at most 1600")


def test_the_editor_names_what_is_missing_before_asking_the_service() -> None:
    empty_status = FilterRow(key="a")
    amount = FilterRow(key="b", kind="amount", min="50", max="10")
    form = CampaignForm(from_mode="listed", filters=[empty_status, amount])
    assert form.problems() == {
        "to_codes": "Tick the status the order changes to: the SMS goes when an order reaches it.",
        "template": "Write the text of the SMS.",
        "from_codes": "Tick at least one original status, or choose “Any”.",
        "filter_a": "Tick the status this condition asks for.",
        "filter_b": "The minimum is above the maximum.",
    }
    assert FilterRow(key="c", kind="amount", min="12,5").problem() == "Enter amounts such as 1990 or 1990.50."
    assert CampaignForm(to_codes=["shipped"], template="Hi").problems() == {}


def test_is_takes_one_status_and_is_one_of_several() -> None:
    redrawn = FilterRow.parse(
        FormData(
            [
                ("filter_kind_a", "order_status"),
                ("filter_op_a", "eq"),
                ("filter_codes_a", "paid"),
                ("filter_codes_a", "refunded"),
            ]
        ),
        "a",
    )
    assert redrawn.codes == ["paid"]
    assert redrawn.condition()["value"] == "paid"
    several = FilterRow(key="a", op="in", codes=["paid", "refunded"])
    assert several.condition()["value"] == ["paid", "refunded"]


def test_the_sample_order_follows_the_conditions() -> None:
    offered = [("invoice_issued", "Invoice issued"), ("paid", "Paid"), ("refunded", "Refunded")]
    paid = CampaignForm(status_type="delivery", filters=[FilterRow(key="a", status_type="payment", codes=["paid"])])
    unpaid = CampaignForm(filters=[FilterRow(key="a", status_type="payment", op="not_in", codes=["invoice_issued"])])
    automatic = FormData([("sample_status_payment", AUTO)])
    assert _sample_status(automatic, paid, "payment", offered) == "paid"  # not the last status of the type
    assert _sample_status(automatic, unpaid, "payment", offered) == "paid"
    assert _sample_status(automatic, paid, "general", offered) == ""  # no condition on the type: none
    chosen = FormData([("sample_status_payment", "refunded")])
    assert _sample_status(chosen, paid, "payment", offered) == "refunded"
