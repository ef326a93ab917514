"""The journey editor (issue 33) in a real browser, in English and in Russian: the payment reminder built as a flow
(trigger "Awaiting payment"; wait 1 day; filter still awaiting; send an SMS; wait 2 days; filter; send an SMS; leave
as soon as it is paid), its preview's timeline, saved and read back through the campaigns API; then a block moved
by keyboard and one removed in place, and the API's refusal of a step's template shown on that block."""

from __future__ import annotations

import re
from typing import Any

from aiokafka import AIOKafkaProducer
from playwright.async_api import Locator, Page, expect

from console.domain import Role
from devtools.upstream import Upstream

from .conftest import Console, SignIn, reload_until_visible, screenshot
from .test_campaigns import define_statuses

AWAITING = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "awaiting_payment"}
PAID = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}
FIRST_TEXT, LAST_TEXT = "Order {{ order.id }} awaits payment", "Last reminder: {{ order.id }}"
REMINDER_STEPS: list[dict[str, Any]] = [
    {"kind": "wait_duration", "minutes": 1440},
    {"kind": "filter", "conditions": [AWAITING]},
    {"kind": "send_sms", "template": FIRST_TEXT, "sender": None},
    {"kind": "wait_duration", "minutes": 2880},
    {"kind": "filter", "conditions": [AWAITING]},
    {"kind": "send_sms", "template": LAST_TEXT, "sender": None},
]
KINDS = [step["kind"] for step in REMINDER_STEPS]
WORDS = {
    "en": {
        "name": "Campaign name",
        "type": "Payment",
        "any": "Any (including none)",
        "target": "Target status",
        "awaiting": "Awaiting payment",
        "paid": "Paid",
        "template": "Text template",
        "add a step": "Add a step",
        "add step": "Add step",
        "wait": "Wait",
        "filter": "Filter, checked again then",
        "send": "Send SMS",
        "add condition": "Add condition",
        "add exit": "Add exit condition",
        "days": "Days",
        "save": "Save as draft",
        "saved": "Save",
        "up": "Move up",
        "down": "Move down",
        "remove": "Remove step",
        "sentence": "When the payment status changes to Awaiting payment: wait 1 day, then if the payment status is"
        " Awaiting payment, send an SMS, then wait 2 days, then if the payment status is Awaiting payment, send an"
        " SMS, once per order; leave as soon as the payment status is Paid.",
        "wait 2 days": "Waits 2 days",
        "no orders yet": "Entered: 0 · waiting now: 0 · left by an exit: 0 · filtered out: 0 · sent: 0",
        "one waiting": "Entered: 1 · waiting now: 1 ·",
        "older version": r"^1 order is still on version \d+\.$",
        "no variable": "There is no variable “order.nope”",
        "run backtest": "Run the backtest",
        "not replayed": "The backtest replays one-step campaigns only",
    },
    "ru": {
        "name": "Название кампании",
        "type": "Оплата",
        "any": "Любой (или ещё никакого)",
        "target": "Новый статус",
        "awaiting": "Ожидает оплаты",
        "paid": "Оплачен",
        "template": "Шаблон текста",
        "add a step": "Добавить шаг",
        "add step": "Добавить шаг",
        "wait": "Пауза",
        "filter": "Фильтр с повторной проверкой",
        "send": "Отправить SMS",
        "add condition": "Добавить условие",
        "add exit": "Добавить условие выхода",
        "days": "Дней",
        "save": "Сохранить черновик",
        "saved": "Сохранить",
        "up": "Выше",
        "down": "Ниже",
        "remove": "Удалить шаг",
        "sentence": "Когда статус оплаты меняется на «Ожидает оплаты»: подождать 1 день, затем, если статус оплаты —"
        " «Ожидает оплаты», отправить SMS, затем подождать 2 дня, затем, если статус оплаты — «Ожидает оплаты»,"
        " отправить SMS — один раз на заказ; выйти из цепочки, как только статус оплаты — «Оплачен».",
        "wait 2 days": "Ждёт 2 дня",
        "no orders yet": "Вошли: 0 · ждут сейчас: 0 · вышли по условию выхода: 0 · не прошло фильтр: 0 · отправлено: 0",
        "one waiting": "Вошли: 1 · ждут сейчас: 1 ·",
        "older version": r"^1 заказ всё ещё идёт по версии \d+\.$",
        "no variable": "Переменной «order.nope» нет",
        "run backtest": "Проверить на прошлом",
        "not replayed": "Проверка на прошлом воспроизводит только одношаговые кампании",
    },
}


def blocks(page: Page) -> Locator:
    return page.locator(".step-block")


async def kinds(page: Page) -> list[str]:
    found: list[str] = await blocks(page).evaluate_all("all => all.map(block => block.dataset.stepKind)")
    return found


async def add_step(page: Page, menu: Locator, label: str, words: dict[str, str]) -> Locator:
    """Open an "Add step" menu and choose a kind; returns the block added (the flow is drawn again with it)."""
    before = await blocks(page).count()
    await menu.locator("summary").click()
    await menu.get_by_role("button", name=label, exact=True).click()
    await expect(blocks(page)).to_have_count(before + 1)
    added = page.locator(".step-block:has(:focus)")  # the new block's first field has the focus (autofocus)
    await expect(added).to_have_count(1)
    await expect(added.get_by_role("heading", name=label, exact=True)).to_be_visible()
    return added


async def add_condition(block: Locator, status: str, words: dict[str, str], button: str) -> None:
    """One "Order status · Payment · is" condition (a new row's defaults) with `status` ticked."""
    rows = block.locator(".filter-row")
    before = await rows.count()
    await block.get_by_role("button", name=button, exact=True).click()
    await expect(rows).to_have_count(before + 1)
    row = rows.nth(before)
    await expect(row).not_to_have_class(re.compile("htmx-added"))
    await row.get_by_label(status, exact=True).check()


async def build_reminder(page: Page, words: dict[str, str]) -> None:
    await page.goto("/campaigns/new")
    await expect(page.locator("#preview-hints")).to_be_visible()  # htmx is at work (it loaded the preview)
    await page.get_by_label(words["name"]).fill("Payment reminder")
    await page.locator("#status-type").select_option(label=words["type"])
    await expect(page.get_by_role("group", name=words["target"]).get_by_label(words["awaiting"])).to_be_visible()
    await page.get_by_label(words["any"]).check()
    await page.get_by_role("group", name=words["target"]).get_by_label(words["awaiting"]).check()
    await page.get_by_label(words["template"]).fill(FIRST_TEXT)

    # one click turns the one-step campaign into a journey: its text is the first "Send SMS" step
    await page.get_by_role("button", name=words["add a step"], exact=True).click()
    await expect(blocks(page)).to_have_count(1)
    await expect(blocks(page).first.get_by_label(words["template"])).to_have_value(FIRST_TEXT)

    wait = await add_step(page, page.locator("#steps > details.add-step"), words["wait"], words)
    await expect(wait.get_by_label(words["days"])).to_have_value("1")
    check = await add_step(page, wait.locator("details.add-step"), words["filter"], words)
    await add_condition(check, words["awaiting"], words, words["add condition"])
    send = blocks(page).nth(2)
    wait_more = await add_step(page, send.locator("details.add-step"), words["wait"], words)
    await wait_more.get_by_label(words["days"]).fill("2")
    check_again = await add_step(page, wait_more.locator("details.add-step"), words["filter"], words)
    await add_condition(check_again, words["awaiting"], words, words["add condition"])
    last = await add_step(page, check_again.locator("details.add-step"), words["send"], words)
    await last.get_by_label(words["template"]).fill(LAST_TEXT)
    await add_condition(page.locator("#exits"), words["paid"], words, words["add exit"])
    assert await kinds(page) == KINDS


async def saved_campaign(console: Console, page: Page) -> dict[str, Any]:
    campaign_id = page.url.rsplit("/", 1)[-1]
    async with console.platform.client("campaigns", "shop") as campaigns:
        response = await campaigns.get(f"/v1/campaigns/{campaign_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


async def press(block: Locator, page: Page, name: str) -> None:
    """A block's button pressed by keyboard."""
    await block.get_by_role("button", name=name, exact=True).focus()
    await page.keyboard.press("Enter")


async def journey_in_the_flow_editor(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer, language: str
) -> None:
    words = WORDS[language]
    await define_statuses(console, "shop")
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop", language=language))
    await build_reminder(page, words)

    # the sentence and the preview's timeline follow the flow: the sample order, still awaiting, reminded twice
    await expect(page.locator("#campaign-summary")).to_have_text(words["sentence"])
    timeline = page.locator("#preview-timeline")
    await expect(timeline.get_by_test_id("timeline-text")).to_have_text(
        ["Order sample awaits payment", "Last reminder: sample"]
    )
    await expect(timeline.locator("li[data-kind=wait]").nth(1)).to_contain_text(words["wait 2 days"])
    if language == "en":
        await screenshot(page, "journey-editor")
    # the backtest says it does not replay a journey, instead of reporting entries that send nothing
    await page.get_by_role("button", name=words["run backtest"]).click()
    await expect(page.locator("[data-backtest-result]")).to_contain_text(words["not replayed"])

    await page.get_by_role("button", name=words["save"]).click()
    await expect(page).to_have_url(re.compile(r"/campaigns/[0-9a-f-]{36}$"))
    saved = await saved_campaign(console, page)
    assert saved["steps"] == REMINDER_STEPS
    assert saved["exit_conditions"] == [PAID]
    assert "template" not in saved or saved["template"] is None
    await expect(page.locator("#campaign-summary")).to_have_text(words["sentence"])
    # each block of the saved journey shows its figures (GET /v1/campaigns/{id}/journey): no order yet
    await expect(page.get_by_test_id("step-figures")).to_have_count(len(REMINDER_STEPS))
    await expect(blocks(page).nth(2).get_by_test_id("step-figures")).to_contain_text(words["no orders yet"])

    # active, an order awaiting payment enters and waits at the first step; the page (reloaded) says so
    async with console.platform.client("campaigns", "shop") as campaigns:
        activated = await campaigns.post(f"/v1/campaigns/{saved['id']}/activate")
        assert activated.status_code == 200, activated.text
    upstream = Upstream(producer, console.platform, "shop")
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "awaiting_payment", 2)
    first = blocks(page).first.get_by_test_id("step-figures")
    await reload_until_visible(page, first.filter(has_text=words["one waiting"]), "the order waiting at step 1")

    # the second filter moved up by keyboard (the focus stays on the button), then back down; the second wait removed
    assert await kinds(page) == KINDS
    await press(blocks(page).nth(4), page, words["up"])
    assert await kinds(page) == [*KINDS[:3], "filter", "wait_duration", "send_sms"]
    await expect(blocks(page).nth(3).get_by_role("button", name=words["up"], exact=True)).to_be_focused()
    await page.keyboard.press("Tab")  # to "Move down", pressed twice: the block goes back, then stays last but one
    await page.keyboard.press("Enter")
    assert await kinds(page) == KINDS
    await press(blocks(page).nth(3), page, words["remove"])
    assert await kinds(page) == [*KINDS[:3], *KINDS[4:]]
    # the focus goes to the block that took its place, so the keyboard goes on from there
    await expect(blocks(page).nth(3).get_by_role("button", name=words["up"], exact=True)).to_be_focused()

    # the service refuses the last text (a variable it does not know): the words sit on that block, beside its text
    last = blocks(page).nth(4)
    await last.get_by_label(words["template"]).fill("{{ order.nope }}")
    await page.get_by_role("button", name=words["saved"], exact=True).click()
    refused = blocks(page).nth(4)
    await expect(refused.locator(".field-error")).to_contain_text(words["no variable"])
    await expect(refused.get_by_label(words["template"])).to_have_attribute("aria-invalid", "true")
    await expect(blocks(page).nth(2).locator(".field-error")).to_have_count(0)
    assert await kinds(page) == [*KINDS[:3], *KINDS[4:]]  # the refused form comes back as it was left

    await refused.get_by_label(words["template"]).fill(LAST_TEXT)
    await page.get_by_role("button", name=words["saved"], exact=True).click()
    await expect(page.locator(".field-error")).to_have_count(0)
    saved = await saved_campaign(console, page)
    assert saved["steps"] == [*REMINDER_STEPS[:3], *REMINDER_STEPS[4:]]
    # the order goes on with the version it entered: the editor says so
    await expect(page.locator("#older-versions li")).to_have_text(re.compile(words["older version"]))


async def test_the_payment_reminder_in_the_flow_editor_in_english(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer
) -> None:
    await journey_in_the_flow_editor(console, sign_in, producer, "en")


async def test_the_payment_reminder_in_the_flow_editor_in_russian(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer
) -> None:
    await journey_in_the_flow_editor(console, sign_in, producer, "ru")
