"""Campaigns in a real browser: the seed campaign built in the editor by status names, its live preview, save,
activate, a template error beside its field, stats, another partner, the Russian editor."""

from __future__ import annotations

import re

from aiokafka import AIOKafkaProducer
from playwright.async_api import Page, expect

from console.domain import Role
from devtools.scenario import example_status_list
from devtools.upstream import Upstream

from .conftest import Console, SignIn, reload_until_visible, screenshot, timed_goto

SEED_TEMPLATE = "{{ customer.name | default: 'Hello' }}, your order {{ order.id }} is {{ to_status.name | downcase }}!"


async def define_statuses(console: Console, partner: str) -> None:
    async with console.platform.client("status-registry", partner) as registry:
        response = await registry.put("/v1/statuses", json={"statuses": example_status_list()})
        assert response.status_code == 200, response.text


async def build_seed_campaign(page: Page) -> None:
    """Delivery status changed from any to "Shipped", payment status is "Paid": send an SMS (by names only)."""
    await page.goto("/campaigns/new")
    await expect(page.locator("#preview-hints")).to_be_visible()  # htmx is at work (it loaded the preview)
    await page.get_by_label("Campaign name").fill("Shipped and paid")
    await page.locator("#status-type").select_option(label="Delivery")
    await page.get_by_label("Any (including none)").check()
    await page.get_by_role("group", name="Target status").get_by_label("Shipped").check()
    await page.get_by_role("button", name="Add condition").click()
    condition = page.locator(".filter-row").first
    await expect(condition).not_to_have_class(re.compile("htmx-added"))  # htmx has wired the new row up
    await condition.get_by_label("Condition", exact=True).select_option(label="Order status")
    await condition.get_by_label("Status type", exact=True).select_option(label="Payment")
    await condition.get_by_label("Comparison", exact=True).select_option(label="is")
    await condition.get_by_label("Paid").check()
    await page.get_by_label("Text template").fill(SEED_TEMPLATE)
    await page.get_by_label("Sender").fill("DemoShop")
    await page.get_by_label("Deliver immediately").check()


async def test_the_seed_campaign_in_the_editor_with_its_live_preview(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer
) -> None:
    await define_statuses(console, "shop")
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await build_seed_campaign(page)

    # the live preview, as typed: the sample customer has paid, so it would send; the text and its segments
    preview = page.locator("#preview")
    await expect(preview.get_by_test_id("preview-text")).to_have_text("Анна, your order sample is отгружен!")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")
    await expect(preview.get_by_test_id("segments")).to_have_text("1")
    # one more condition (htmx adds the row, its kind draws its fields): too small an amount filters the order out
    await page.get_by_role("button", name="Add condition").click()
    extra = page.locator(".filter-row").nth(1)
    await expect(extra).not_to_have_class(re.compile("htmx-added"))  # htmx has wired the new row up
    await extra.get_by_label("Condition", exact=True).select_option(label="Order amount")
    await extra.get_by_label("At least").fill("5000")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "filtered_out")
    await expect(preview.locator("#preview-reasons")).to_have_text(
        "Condition 2: the amount 1990.00 is below the minimum, 5000."
    )
    await extra.get_by_role("button", name="Remove condition").click()
    await expect(page.locator(".filter-row")).to_have_count(1)
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")
    # an unpaid sample order would be filtered out, with the reason in words and status names
    await page.locator('select[name="sample_status_payment"]').select_option(label="Awaiting payment")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "filtered_out")
    await expect(preview.locator("#preview-reasons")).to_have_text(
        "Condition 1: the Payment status is Awaiting payment; the condition asks for Paid."
    )
    await page.locator('select[name="sample_status_payment"]').select_option(label="As the conditions ask")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")
    await screenshot(page, "campaign-editor")

    await page.get_by_role("button", name="Save as draft").click()
    await expect(page).to_have_url(re.compile(r"/campaigns/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("status").filter(has_text="saved as a draft")).to_be_visible()
    campaign_url = page.url
    await page.get_by_role("button", name="Activate").click()
    await expect(page.get_by_role("status").filter(has_text="is active")).to_be_visible()

    async with console.platform.client("campaigns", "shop") as campaigns:
        (saved,) = (await campaigns.get("/v1/campaigns")).json()["items"]
    assert saved["state"] == "active"
    assert saved["trigger"] == {"status_type": "delivery", "from": "any", "to": "shipped"}
    assert saved["filters"] == [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}]
    assert (saved["template"], saved["sender"], saved["quiet_hours"]) == (
        SEED_TEMPLATE,
        "DemoShop",
        "deliver_immediately",
    )

    # someone else changes the campaign meanwhile: saving the stale form says so instead of overwriting
    async with console.platform.client("campaigns", "shop") as campaigns:
        definition = {k: saved[k] for k in ("trigger", "filters", "template", "sender", "reentry", "quiet_hours")}
        changed = await campaigns.put(f"/v1/campaigns/{saved['id']}", json=definition | {"name": "Shipped, paid"})
        assert changed.status_code == 200, changed.text
    await page.get_by_label("Campaign name").fill("Shipped and paid, mine")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.locator("#form-error")).to_contain_text("changed by someone else")
    await page.goto(campaign_url)
    await expect(page.get_by_label("Campaign name")).to_have_value("Shipped, paid")

    # a broken template: the campaigns service's error, with its line, beside the template field
    await page.get_by_label("Text template").fill("Hello {% if %}")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.locator("#template-error")).to_have_text(
        re.compile(r"^Line 1: The template's markup is broken here \(.+\): each \{\{ needs its \}\}")
    )
    await expect(page.get_by_label("Text template")).to_have_attribute("aria-invalid", "true")

    # real orders shipped: o-1 paid (an SMS), o-2 unpaid (filtered out); the preview of o-2 by its id says why
    upstream = Upstream(producer, console.platform, "shop")
    await upstream.order("o-1", "Анна", "invoice_issued")  # an order's first status is the initial one
    await upstream.report("o-1", "paid", 2)
    await upstream.report("o-1", "shipped", 3)
    await upstream.order("o-2", "Борис", "invoice_issued")
    await upstream.report("o-2", "shipped", 2)
    timings: dict[str, float] = {}
    await timed_goto(page, f"/campaigns/{saved['id']}/stats", timings)
    await reload_until_visible(page, page.locator('tr[data-reason="payment_status"]'), "o-2 filtered out")
    await reload_until_visible(page, page.locator('tr[data-stat="triggered"] td', has_text="2"), "both triggered")
    await expect(page.locator('tr[data-reason="payment_status"]')).to_contain_text(
        "The order's Payment status is not one the condition asks for."
    )
    await screenshot(page, "campaign-stats")
    await page.goto(campaign_url)
    await page.get_by_label("An order of yours").fill("o-2")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "filtered_out")
    await expect(preview.locator("#preview-reasons")).to_have_text(
        "Condition 1: the Payment status is Invoice issued; the condition asks for Paid."
    )

    await timed_goto(page, "/campaigns", timings)
    row = page.locator(f'tr[data-campaign="{saved["id"]}"]')
    await expect(row).to_contain_text("Shipped")
    await expect(row.locator("mark")).to_have_text("Active")  # a campaign's state in words
    await expect(row.locator("td").nth(3)).to_have_text("2")  # triggered in the last 24 hours
    await screenshot(page, "campaigns")
    print(f"campaign page load times (ms): {timings}")

    # another partner's marketer: the campaign's URL is not found
    other = await sign_in(await console.user("m@other.example", Role.MARKETER, "other"))
    response = await other.goto(campaign_url)
    assert response is not None and response.status == 404
    await other.goto("/campaigns")
    await expect(other.locator(f'tr[data-campaign="{saved["id"]}"]')).to_have_count(0)

    # the editor in Russian
    await page.goto(campaign_url)
    await page.get_by_role("button", name="RU", exact=True).click()
    await expect(page.get_by_role("heading", name="Триггер: изменился статус заказа")).to_be_visible()
    await expect(page.get_by_role("heading", name="Фильтр клиентов")).to_be_visible()
    await expect(page.locator("#trigger-statuses")).to_contain_text("Отгружен")
    await expect(page.locator("label", has=page.locator('input[name="window_start"]'))).to_have_text("С")
    await expect(page.locator("label", has=page.locator('input[name="window_end"]'))).to_have_text("До")
    await page.locator('select[name="sample_status_payment"]').select_option(label="Ожидает оплаты")
    await expect(preview.locator("#preview-reasons")).to_have_text(
        "Условие 1: статус «Оплата» — Ожидает оплаты; условие требует: Оплачен."
    )


async def test_a_viewer_reads_campaigns_and_cannot_change_them(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    marketer = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await build_seed_campaign(marketer)
    await marketer.get_by_role("button", name="Save as draft").click()
    await expect(marketer).to_have_url(re.compile(r"/campaigns/[0-9a-f-]{36}$"))
    campaign_path = marketer.url.split(":", 2)[-1].split("/", 1)[-1]

    viewer = await sign_in(await console.user("v@shop.example", Role.VIEWER, "shop"))
    await viewer.goto(f"/{campaign_path}")
    await expect(viewer.get_by_label("Campaign name")).to_have_value("Shipped and paid")
    await expect(viewer.get_by_label("Campaign name")).to_be_disabled()
    # the read-only editor's preview shows the saved campaign's SMS (its disabled fields are not sent)
    await expect(viewer.locator("#preview [data-outcome]")).to_have_attribute("data-outcome", "fired")
    await expect(viewer.locator("#preview-hints")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Activate")).to_have_count(0)
    await viewer.goto("/campaigns/new")
    await expect(viewer.get_by_role("heading", name="Not for your role")).to_be_visible()


async def test_a_new_campaign_explains_what_is_missing_and_counts_as_billed(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await page.goto("/campaigns/new")
    preview = page.locator("#preview")
    # the empty state is a calm hint, no alert; a new campaign has no condition to fill in yet
    await expect(preview.locator("#preview-hints")).to_contain_text("Tick the status the order changes to")
    await expect(preview.get_by_role("alert")).to_have_count(0)
    await expect(page.locator(".filter-row")).to_have_count(0)
    # the partner's default quiet hours say what they are and where they change
    await expect(page.locator("#partner-default-hint")).to_contain_text(
        "Now: only between 09:00 and 21:00, in the recipient's local time."
    )
    await expect(page.locator("#partner-default-hint")).to_contain_text("PUT /v1/settings")
    await page.get_by_role("group", name="Target status").get_by_label("Shipped").check()
    await page.get_by_label("Text template").fill("{{ customer.name }}, заказ {{ order.id }} отгружен")
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")
    await expect(preview.locator("#preview-hints")).to_have_count(0)

    # a condition not filled in yet: a hint that names it, the preview leaves it out; never a developer's words
    await page.get_by_role("button", name="Add condition").click()
    condition = page.locator(".filter-row").first
    await expect(condition).not_to_have_class(re.compile("htmx-added"))
    await expect(preview.locator("#preview-hints")).to_have_text(
        re.compile(r"Condition 1: Tick the status this condition asks for\.")
    )
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")
    await expect(preview).not_to_contain_text("Input should be")

    # "is" takes one status (radio buttons), "is one of" several (check boxes)
    await condition.get_by_label("Status type", exact=True).select_option(label="Payment")
    await expect(condition.locator('input[type="radio"]')).to_have_count(3)
    await condition.get_by_label("Comparison", exact=True).select_option(label="is one of")
    await expect(condition.locator('input[type="checkbox"]')).to_have_count(3)
    await condition.get_by_label("Paid").check()
    await condition.get_by_label("Awaiting payment").check()
    await expect(preview.locator("[data-outcome]")).to_have_attribute("data-outcome", "fired")

    # characters as billed: 69 Cyrillic letters and an emoji are 71 UCS-2 code units, so 2 segments
    await page.get_by_label("Text template").fill("Ж" * 69 + "🎉")
    await expect(preview.get_by_test_id("characters")).to_have_text("71")
    await expect(preview.get_by_test_id("segments")).to_have_text("2")

    # saving without a name, a target or a sender the provider takes: each field says what to do, in words
    await page.get_by_role("group", name="Target status").get_by_label("Shipped").uncheck()
    await page.get_by_label("Sender").fill("Demo Shop!")
    await page.get_by_role("button", name="Save as draft").click()
    await expect(page.locator("#to_codes-error")).to_have_text(
        "Tick the status the order changes to: the SMS goes when an order reaches it."
    )
    await page.get_by_label("Campaign name").fill("Shipped")
    await page.get_by_role("group", name="Target status").get_by_label("Shipped").check()
    await page.get_by_role("button", name="Save as draft").click()
    await expect(page.locator("#sender-error")).to_contain_text("Up to 15 Latin letters, digits, spaces")
    await page.get_by_label("Sender").fill("DemoShop")
    await page.get_by_role("button", name="Save as draft").click()
    await expect(page).to_have_url(re.compile(r"/campaigns/[0-9a-f-]{36}$"))
    async with console.platform.client("campaigns", "shop") as campaigns:
        (saved,) = (await campaigns.get("/v1/campaigns")).json()["items"]
    assert saved["filters"] == [
        {"kind": "order_status", "status_type": "payment", "op": "in", "value": ["awaiting_payment", "paid"]}
    ]
    await expect(page.locator("mark.state-draft")).to_have_text("Draft")
