"""The campaign editor explains itself, in English and Russian: a variable picker inserts {{ variable }} where the
text box's cursor is (by keyboard); beside the text box, as the marketer types, the encoding, characters as billed,
segments and the character that forced UCS-2; at the top, what the campaign does in one sentence, following the
form as it changes, and the same sentence in the campaigns list."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page, expect

from console.domain import Role

from .conftest import Console, SignIn
from .test_campaigns import build_seed_campaign, define_statuses

SEED_SENTENCE = (
    "When the delivery status changes to Shipped and the payment status is Paid, send an SMS from DemoShop, once per"
    " order."
)


async def put_cursor(box: Locator, position: int) -> None:
    """The cursor at `position` of the text box, moved there by keyboard as a person would."""
    await box.focus()
    await box.press("Control+Home")
    for _ in range(position):
        await box.press("ArrowRight")


async def insert_variable(page: Page, label: str, button: str) -> None:
    """Choose a variable in the picker and press its button, by keyboard (the text box keeps its cursor)."""
    picker = page.locator("#template-variable")
    await picker.focus()
    await picker.select_option(label=label)
    await page.get_by_role("button", name=button).focus()
    await page.keyboard.press("Enter")


async def test_the_editor_in_english(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    summary = page.locator("#campaign-summary")

    await page.goto("/campaigns/new")
    await expect(summary).to_have_text("When the delivery status changes to …, send an SMS, once per order.")
    await build_seed_campaign(page)  # by status names, with a sender: the sentence follows the form as it changes
    await expect(summary).to_have_text(SEED_SENTENCE)
    await page.get_by_label("Every time the change happens").check()
    await expect(summary).to_have_text(re.compile(r"from DemoShop, every time the change happens\.$"))
    await page.get_by_label("Once per order").check()
    await expect(summary).to_have_text(SEED_SENTENCE)

    # the picker inserts at the cursor, replacing nothing, and leaves the cursor after the variable
    box = page.get_by_label("Text template")
    await box.fill("Hello , your order is on its way")
    await put_cursor(box, len("Hello "))
    await expect(page.get_by_label("Variable", exact=True)).to_be_visible()
    await insert_variable(page, "Customer name · customer.name", "Insert at the cursor")
    text = "Hello {{ customer.name }}, your order is on its way"
    await expect(box).to_have_value(text)
    await expect(box).to_be_focused()
    assert await box.evaluate("box => box.selectionStart") == len("Hello {{ customer.name }}")
    await expect(page.get_by_test_id("preview-text")).to_have_text("Hello Анна, your order is on its way")

    # the count beside the box follows the typing: GSM-7 (a brace costs two septets), then a Cyrillic letter
    count = page.locator("#text-count")
    await expect(count.get_by_test_id("text-encoding")).to_have_text("GSM-7")
    await expect(count.get_by_test_id("text-characters")).to_have_text(str(len(text) + 4))
    await expect(count.get_by_test_id("text-segments")).to_have_text("1")
    await expect(count.get_by_test_id("text-forcing")).to_have_count(0)
    await box.press("End")
    await box.press_sequentially(" ёлка")  # Cyrillic: the whole text becomes UCS-2
    await expect(count.get_by_test_id("text-encoding")).to_have_text("UCS-2")
    await expect(count.get_by_test_id("text-characters")).to_have_text(str(len(text) + 5))
    await expect(count.get_by_test_id("text-forcing")).to_have_text("«ё», «л», «к» and others need UCS-2")
    for _ in range(3):
        await box.press("Backspace")
    await expect(count.get_by_test_id("text-forcing")).to_have_text("«ё» needs UCS-2")
    await box.press_sequentially("ж" * 70)  # past one UCS-2 SMS's 70 characters: 67 a segment
    await expect(count.get_by_test_id("text-segments")).to_have_text("2")

    await page.get_by_role("button", name="Save as draft").click()
    await expect(page).to_have_url(re.compile(r"/campaigns/[0-9a-f-]{36}$"))
    await expect(summary).to_have_text(SEED_SENTENCE)  # the saved campaign's sentence, as the editor draws it
    await page.goto("/campaigns")
    await expect(page.get_by_role("columnheader", name="What it does")).to_be_visible()
    await expect(page.locator("tr[data-campaign] td.campaign-summary")).to_have_text(SEED_SENTENCE)


async def test_the_editor_in_russian(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    async with console.platform.client("campaigns", "shop") as campaigns:
        created = await campaigns.post(
            "/v1/campaigns",
            json={
                "name": "Первый статус",
                "trigger": {"status_type": "delivery", "from": "none", "to": ["shipped", "delivered"]},
                "filters": [
                    {"kind": "order_status", "status_type": "payment", "op": "not_in", "value": ["awaiting_payment"]},
                    {"kind": "amount", "min": "1000", "currency": "RUB"},
                ],
                "template": "Заказ {{ order.id }} в пути",
                "sender": "DemoShop",
                "reentry": "every_time",
            },
        )
        assert created.status_code == 201, created.text
    sentence = (
        "Когда первым статусом доставки у заказа становится «Отгружен» или «Доставлен», статус оплаты — не «Ожидает"
        " оплаты» и сумма заказа не меньше 1\xa0000 RUB, отправить SMS от имени DemoShop — при каждом таком изменении."
    )
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop", language="ru"))

    await page.goto("/campaigns")
    await expect(page.get_by_role("columnheader", name="Что делает")).to_be_visible()
    await expect(page.locator("tr[data-campaign] td.campaign-summary")).to_have_text(sentence)

    await page.get_by_role("link", name="Первый статус").click()
    summary = page.locator("#campaign-summary")
    await expect(summary).to_have_text(sentence)
    await page.get_by_label("Один раз на заказ").check()  # the sentence follows the form
    await expect(summary).to_have_text(re.compile(r"от имени DemoShop — один раз на заказ\.$"))
    await page.get_by_label("Отправитель").fill("")
    await expect(summary).to_have_text(re.compile(r", отправить SMS — один раз на заказ\.$"))

    # the picker, labelled in Russian: the order's number between two words, where the cursor is
    box = page.get_by_label("Шаблон текста")
    await box.fill("Заказ  в пути")
    await put_cursor(box, len("Заказ "))
    await expect(page.get_by_label("Переменная", exact=True)).to_be_visible()
    await insert_variable(page, "Номер заказа · order.id", "Вставить в позицию курсора")
    await expect(box).to_have_value("Заказ {{ order.id }} в пути")
    await expect(page.get_by_test_id("preview-text")).to_have_text("Заказ sample в пути")

    # Cyrillic: UCS-2, each character one unit, and what forced it
    count = page.locator("#text-count")
    await expect(count).to_contain_text("Как написано")
    await expect(count.get_by_test_id("text-encoding")).to_have_text("UCS-2")
    await expect(count.get_by_test_id("text-characters")).to_have_text(str(len("Заказ {{ order.id }} в пути")))
    await expect(count.get_by_test_id("text-forcing")).to_have_text(
        "Из-за «З», «а», «к» и других символов нужна кодировка UCS-2"
    )
    await box.fill("Your order is on its way, Al")
    await expect(count.get_by_test_id("text-encoding")).to_have_text("GSM-7")
    await box.press("End")
    await box.press_sequentially("ё")
    await expect(count.get_by_test_id("text-encoding")).to_have_text("UCS-2")
    await expect(count.get_by_test_id("text-forcing")).to_have_text("Из-за «ё» нужна кодировка UCS-2")
