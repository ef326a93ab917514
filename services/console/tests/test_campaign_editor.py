"""The campaign editor's explanations: what a campaign does in one sentence of the user's language (several shapes of
campaign, English and Russian), and the count beside the text box (encoding, characters as billed, segments, and
which characters forced UCS-2), from explain.py to the fragment the editor asks for as the marketer types."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from console import explain
from console.app import create_app
from console.domain import Role
from console.pages.campaigns import VARIABLE_LABELS, CampaignForm, FilterRow
from console.services import Users
from console.settings import ConsoleSettings
from console.web import Templates, gettext_of
from contracts.sms_text import TEMPLATE_VARIABLES
from devtools.pytest_plugin import Infrastructure

EN, RU = gettext_of("en"), gettext_of("ru")
NAMES = {
    "en": {"shipped": "Shipped", "delivered": "Delivered", "packed": "Packed", "paid": "Paid", "refunded": "Refunded"},
    "ru": {
        "shipped": "Отправлен",
        "delivered": "Доставлен",
        "packed": "Собран",
        "paid": "Оплачен",
        "refunded": "Возвращён",
    },
}
PASSWORD = "correct-horse-battery-staple"


def campaign(trigger: dict[str, Any], filters: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {"trigger": trigger, "filters": filters, "sender": None, "reentry": "once_per_order"} | rest


def both(definition: dict[str, Any]) -> tuple[str, str]:
    return explain.summary(EN, "en", definition, NAMES["en"]), explain.summary(RU, "ru", definition, NAMES["ru"])


SHIPPED_AND_PAID = campaign(
    {"status_type": "delivery", "from": "any", "to": "shipped"},
    [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    sender="DemoShop",
)


def test_the_seed_campaign_in_one_sentence() -> None:
    assert both(SHIPPED_AND_PAID) == (
        "When the delivery status changes to Shipped and the payment status is Paid, send an SMS from DemoShop,"
        " once per order.",
        "Когда статус доставки меняется на «Отправлен» и статус оплаты — «Оплачен», отправить SMS от имени DemoShop"
        " — один раз на заказ.",
    )


def test_statuses_from_and_to_several_none_of_several_and_every_time() -> None:
    shape = campaign(
        {"status_type": "delivery", "from": ["packed"], "to": ["shipped", "delivered"]},
        [{"kind": "order_status", "status_type": "payment", "op": "not_in", "value": ["paid", "refunded"]}],
        reentry="every_time",
    )
    assert both(shape) == (
        "When the delivery status changes from Packed to Shipped or Delivered and the payment status is not Paid and"
        " not Refunded, send an SMS, every time the change happens.",
        "Когда статус доставки меняется с «Собран» на «Отправлен» или «Доставлен» и статус оплаты — не «Оплачен» и не"
        " «Возвращён», отправить SMS — при каждом таком изменении.",
    )


def test_a_first_status_and_one_of_several() -> None:
    shape = campaign(
        {"status_type": "payment", "from": "none", "to": "paid"},
        [{"kind": "order_status", "status_type": "delivery", "op": "in", "value": ["packed", "shipped", "delivered"]}],
    )
    assert both(shape) == (
        "When an order's first payment status is Paid and the delivery status is Packed, Shipped, or Delivered,"
        " send an SMS, once per order.",
        "Когда первым статусом оплаты у заказа становится «Оплачен» и статус доставки — «Собран», «Отправлен»"
        " или «Доставлен», отправить SMS — один раз на заказ.",
    )


def test_amounts_consent_and_phone_listed_with_commas() -> None:
    shape = campaign(
        {"status_type": "general", "from": "any", "to": "shipped"},
        [
            {"kind": "amount", "min": "1000", "max": "25000.50", "currency": "RUB"},
            {"kind": "sms_consent"},
            {"kind": "has_phone"},
        ],
    )
    assert both(shape) == (
        "When the order status changes to Shipped, the order amount is between 1,000 and 25,000.5 RUB, the customer"
        " agreed to SMS, and the customer has a valid mobile phone, send an SMS, once per order.",
        "Когда статус заказа меняется на «Отправлен», сумма заказа от 1\xa0000 до 25\xa0000,5 RUB, клиент согласен"
        " получать SMS и у клиента есть действующий мобильный телефон, отправить SMS — один раз на заказ.",
    )
    at_least = campaign({"status_type": "delivery", "to": "shipped"}, [{"kind": "amount", "min": "500"}])
    assert "the order amount is at least 500," in both(at_least)[0]
    at_most = campaign(
        {"status_type": "delivery", "to": "shipped"}, [{"kind": "amount", "max": "500", "currency": "USD"}]
    )
    assert "сумма заказа не больше 500 USD," in both(at_most)[1]


def test_an_unknown_status_is_named_by_its_code_and_a_missing_target_is_an_ellipsis() -> None:
    archived = campaign({"status_type": "delivery", "from": "any", "to": "lost_in_transit"}, [])
    assert both(archived)[0] == "When the delivery status changes to lost_in_transit, send an SMS, once per order."
    form = CampaignForm(filters=[FilterRow(key="a", status_type="payment")])  # a condition still without its status
    sentence = explain.summary(RU, "ru", form.complete().definition(), NAMES["ru"])
    assert sentence == "Когда статус доставки меняется на …, отправить SMS — один раз на заказ."


def test_the_count_of_a_latin_text_and_what_forces_ucs2() -> None:
    latin = explain.text_count(EN, "Your order {{ order.id }} is on its way [5€ off]")
    assert latin == explain.TextCount("GSM-7", 55, 1, None)  # 48 characters; { } [ ] € cost two septets each
    one = explain.text_count(EN, "Your order is on its way, Alёna")
    assert (one.encoding, one.forcing) == ("UCS-2", "«ё» needs UCS-2")
    assert explain.text_count(RU, "Заказ").forcing == "Из-за «З», «а», «к» и других символов нужна кодировка UCS-2"
    assert explain.text_count(EN, "Hi 😍 ё").forcing == "«😍», «ё» need UCS-2"
    pasted = explain.text_count(EN, "Your\u00a0order")  # a no-break space pasted from a document: named, not invisible
    assert pasted.forcing == "U+00A0 no-break space needs UCS-2"
    cyrillic = explain.text_count(RU, "Ж" * 69 + "😍")  # an emoji is two UCS-2 code units: 71, two segments
    assert (cyrillic.characters, cyrillic.segments) == (71, 2)


def test_the_count_fragment_in_both_languages() -> None:
    templates = Templates(("en", "ru"))
    english = templates.render("en", "campaigns/text_count.html", {"count": explain.text_count(EN, "Hi ё")})
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", english)).strip() == (
        "As written: UCS-2 · characters as billed: 4 · segments: 1 · «ё» needs UCS-2"
    )
    russian = templates.render("ru", "campaigns/text_count.html", {"count": explain.text_count(RU, "Hi")})
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", russian)).strip() == (
        "Как написано: GSM-7 · символов к оплате: 2 · частей: 1"
    )


def test_the_variable_picker_names_every_variable_the_templates_accept() -> None:
    assert set(VARIABLE_LABELS) == set(TEMPLATE_VARIABLES)
    assert all(RU(label) != label for label in VARIABLE_LABELS.values())  # each translated


@pytest.fixture
async def console(infrastructure: Infrastructure, database: str) -> AsyncIterator[FastAPI]:
    app = create_app(ConsoleSettings(database_url=database, kafka_bootstrap_servers=infrastructure.kafka_bootstrap))
    async with app.router.lifespan_context(app):
        await Users(app.state.pool).create("m@acme.example", Role.MARKETER, "acme", password=PASSWORD, language="ru")
        yield app


async def test_the_editor_asks_for_the_count_as_the_marketer_types(console: FastAPI) -> None:
    transport = httpx.ASGITransport(app=console)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/login")).text)
        assert found
        token = found.group(1)
        signed_in = await client.post(
            "/login", data={"email": "m@acme.example", "password": PASSWORD, "csrf_token": token}
        )
        assert signed_in.status_code == 303
        found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/account")).text)  # the session's
        assert found
        token = found.group(1)
        answer = await client.post(
            "/campaigns/-/text-count",
            data={"template": "Ваш заказ {{ order.id }} ёмкий", "csrf_token": token},
            headers={"HX-Request": "true"},
        )
    assert answer.status_code == 200
    assert "<html" not in answer.text  # a fragment, for the editor's #text-count
    assert '<span data-testid="text-encoding">UCS-2</span>' in answer.text
    assert '<span data-testid="text-characters">30</span>' in answer.text
    assert "Из-за «В», «а», «ш» и других символов нужна кодировка UCS-2" in answer.text
