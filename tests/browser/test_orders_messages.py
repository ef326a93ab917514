"""Orders, analytics and messages in a real browser, on the seed example defined through the public APIs and orders
published upstream on Kafka: the order search, the order page (statuses by name, the history timeline with its
stale and unchanged events, "set status" by name and a refused transition), analytics of flagged statuses with the
segment's CSV, the SMS with its text and links, opt-outs; a viewer reads only; another partner sees none of it."""

from __future__ import annotations

import csv
import io
import json
import re

from aiokafka import AIOKafkaProducer
from playwright.async_api import Page, expect

from console.domain import Role
from devtools.platform import Platform
from devtools.scenario import define_example, example_status_list
from devtools.upstream import Upstream

from .conftest import Console, SignIn, reload_until_visible, screenshot, timed_goto

PARTNER = "shop"


async def make_delivered_final(platform: Platform) -> None:
    """The seed statuses again with "Delivered" final (no next status): setting "Shipped" after it is refused."""
    statuses = [s | {"allowed_next": []} if s["code"] == "delivered" else s for s in example_status_list()]
    async with platform.client("status-registry", PARTNER) as registry:
        synced = await registry.put("/v1/statuses", json={"statuses": statuses})
        assert synced.status_code == 200, synced.text


async def publish_orders(upstream: Upstream) -> None:
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", 2)
    await upstream.report("o-1", "shipped", 3)  # paid, then shipped: the campaign's SMS
    await upstream.report("o-1", "at_pickup_point", 2)  # older than "shipped": stale
    await upstream.report("o-1", "paid", 4)  # paid again: unchanged
    await upstream.order("o-2", "Борис", "invoice_issued")
    await upstream.report("o-2", "shipped", 2)  # shipped unpaid: no SMS


async def test_orders_analytics_and_messages_in_the_browser(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer
) -> None:
    campaign_id = await define_example(console.platform, PARTNER)
    await make_delivered_final(console.platform)
    await publish_orders(Upstream(producer, console.platform, PARTNER))
    page = await sign_in(await console.user("marketer@shop.example", Role.MARKETER, PARTNER))
    timings: dict[str, float] = {}

    await check_order_search(page, timings)
    await check_order_page(page, timings)
    await check_messages(page, campaign_id, timings)
    await check_opt_outs(page)
    await check_analytics(page, timings)
    await check_viewer_reads_only(await sign_in(await console.user("viewer@shop.example", Role.VIEWER, PARTNER)))
    await check_other_partner_sees_nothing(await sign_in(await console.user("m@other.example", Role.MARKETER, "other")))
    print(f"console page load times (ms): {timings}")


async def check_order_search(page: Page, timings: dict[str, float]) -> None:
    await page.goto("/orders")
    await reload_until_visible(page, page.locator('tr[data-order="o-2"]'), "order o-2")
    await timed_goto(page, "/orders", timings)
    first = page.locator('tr[data-order="o-1"]')
    for name in ("Accepted", "Paid"):  # the three current statuses by name
        await expect(first).to_contain_text(name)
    await expect(page.locator('tr[data-order="o-2"]')).to_contain_text("Invoice issued")
    await expect(page.locator('tr[data-order="o-2"]')).to_contain_text("Shipped")
    await expect(first.locator("td").last).to_contain_text("2026")  # updated time, formatted (not ISO)
    await screenshot(page, "orders")

    # by status, chosen by name (grouped by type): only the paid order
    await page.get_by_label("Status", exact=True).select_option(label="Paid")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tr[data-order]")).to_have_count(1)
    await expect(page.locator('tr[data-order="o-1"]')).to_be_visible()
    # by customer id
    await page.goto("/orders")
    await page.get_by_label("Customer id").fill("c-o-2")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tr[data-order]")).to_have_count(1)
    await expect(page.locator('tr[data-order="o-2"]')).to_contain_text("Борис")
    # an unknown order id says so; a known one goes straight to the order
    await page.get_by_label("Order id").fill("o-404")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("alert")).to_contain_text("No order with the id “o-404”")
    await page.get_by_label("Order id").fill("o-1")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/orders/o-1$"))


async def check_order_page(page: Page, timings: dict[str, float]) -> None:
    timeline = page.locator(".timeline")
    # "paid again" is o-1's last event upstream: once it shows, all of them were applied (per-order ordering)
    await reload_until_visible(page, timeline.locator('li[data-outcome="unchanged"]'), "the unchanged event")
    await timed_goto(page, "/orders/o-1", timings)
    await expect(page.locator('dd[data-type="general"]')).to_contain_text("Accepted")
    await expect(page.locator('dd[data-type="delivery"]')).to_contain_text("Shipped")
    await expect(page.locator('dd[data-type="payment"]')).to_contain_text("Paid")
    await expect(page.locator('#current-statuses dd[data-type="payment"]')).to_contain_text("2026")  # since when
    await expect(timeline.locator('li[data-outcome="applied"]')).to_have_count(5)  # 3 initial, paid, shipped
    stale = timeline.locator('li[data-outcome="stale"]')
    await expect(stale).to_contain_text("At pickup point")
    await expect(stale).to_contain_text("upstream sequence 2")
    await expect(timeline.locator('li[data-outcome="unchanged"]')).to_contain_text("Paid")
    await expect(timeline).to_contain_text("source: upstream event")
    await expect(timeline.locator("li").first).to_contain_text("occurred")
    await expect(timeline.locator("li").first).to_contain_text("recorded")
    await expect(page.locator('#details-history li[data-outcome="created"]')).to_have_count(1)
    await screenshot(page, "order")

    # "set status" by name: the orders API applies it, the timeline says it came through the HTTP API
    status_field = page.get_by_label("Set status", exact=True)
    await status_field.select_option(label="Delivered")
    await page.get_by_role("button", name="Set status").click()
    await expect(page.get_by_role("status").filter(has_text="Status set.")).to_be_visible()
    await expect(page.locator('dd[data-type="delivery"]')).to_contain_text("Delivered")
    await expect(timeline.locator("li").first).to_contain_text("source: HTTP API")
    # "Delivered" is final: the orders API refuses the transition, its reason beside the field
    await status_field.select_option(label="Shipped")
    await page.get_by_role("button", name="Set status").click()
    await expect(page.locator("#code-error")).to_contain_text("cannot move to 'shipped'")
    await expect(status_field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator('dd[data-type="delivery"]')).to_contain_text("Delivered")
    # the list shows what changed last first: o-1, just set, above o-2 (whose last event came before)
    await page.goto("/orders")
    await expect(page.locator("tr[data-order]").first).to_have_attribute("data-order", "o-1")


async def check_messages(page: Page, campaign_id: str, timings: dict[str, float]) -> None:
    await page.goto("/messages")
    rows = page.locator("tr[data-message]")
    await reload_until_visible(page, rows, "the SMS")
    await timed_goto(page, "/messages", timings)
    await expect(rows).to_have_count(1)  # o-2 shipped unpaid: none for it
    message = rows.first
    await expect(message).to_contain_text("Анна, your order o-1 is отгружен!")
    await expect(message).to_contain_text("+79161110001")
    await expect(message.get_by_role("link", name="o-1")).to_have_attribute("href", "/orders/o-1")
    campaign = message.get_by_role("link", name="Shipped and paid")
    await expect(campaign).to_have_attribute("href", f"/campaigns/{campaign_id}")
    await expect(message.locator("mark")).to_contain_text(re.compile(r"sent|delivered|sending|pending"))
    await screenshot(page, "messages")

    # at 1366 px the table fits: nothing scrolls sideways, the Order column is whole, even with an SMS that holds a
    # long tracking link (no space to wrap at) and a long order id
    await page.set_viewport_size({"width": 1366, "height": 768})
    table = page.locator("table.messages")
    await message.locator("td.text").evaluate("td => { td.textContent = 'https://shop.example/t/' + 'a1'.repeat(60) }")
    await message.locator("td.order a").evaluate("a => { a.textContent = 'ORDER-2026-' + '0'.repeat(40) }")
    assert await table.evaluate("t => t.parentElement.scrollWidth <= t.parentElement.clientWidth")
    order_cell, box = message.locator("td.order"), await table.bounding_box()
    cell = await order_cell.bounding_box()
    assert box is not None and cell is not None and cell["x"] + cell["width"] <= box["x"] + box["width"] + 1
    assert cell["x"] + cell["width"] <= 1366
    # "failed" and "delivered" badges have colours of their own
    colours = await page.evaluate(
        """() => ["sms-failed", "sms-delivered", "sms-dispatched"].map((name) => {
             const mark = document.body.appendChild(document.createElement("mark"));
             mark.className = name;
             const colour = getComputedStyle(mark).backgroundColor;
             mark.remove();
             return colour;
           })"""
    )
    assert len(set(colours)) == 3, colours
    await page.set_viewport_size({"width": 1280, "height": 900})

    # filters the notifier has: by order
    await page.get_by_label("Order id").fill("o-2")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(0)
    await expect(page.get_by_text("No messages match.")).to_be_visible()

    # the message's page: its text, state, attempts, campaign by name
    await page.goto("/messages")
    await message.get_by_role("link").first.click()
    await expect(page.locator("#message-text")).to_have_text("Анна, your order o-1 is отгружен!")
    await expect(page.get_by_role("link", name="Shipped and paid")).to_be_visible()
    await expect(page.locator("#attempts tbody tr").first).to_contain_text("1")


async def check_opt_outs(page: Page) -> None:
    await page.goto("/messages/opt-outs")
    await page.get_by_label("Phone number").fill("12")
    await page.get_by_role("button", name="Opt out").click()
    await expect(page.locator("#phone-error")).to_be_visible()
    await expect(page.get_by_label("Phone number")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Phone number").fill("+79161110009")
    await page.get_by_role("button", name="Opt out").click()
    await expect(page.locator('tr[data-phone="+79161110009"]')).to_be_visible()
    await page.get_by_role("button", name="Remove +79161110009").click()
    await expect(page.locator('tr[data-phone="+79161110009"]')).to_have_count(0)
    await expect(page.get_by_text("Nobody has opted out.")).to_be_visible()


async def check_analytics(page: Page, timings: dict[str, float]) -> None:
    await timed_goto(page, "/analytics", timings)
    counts = page.locator("#counts")
    for flagged in ("completed", "delivered", "paid"):
        await expect(counts.locator(f'tr[data-code="{flagged}"]')).to_have_count(1)
    await expect(counts.locator("tbody tr")).to_have_count(3)  # nothing else: not flagged for analytics
    await expect(counts.locator('tr[data-code="paid"] td').first).to_have_text("1")  # o-1 is paid now
    await expect(counts.locator('tr[data-code="delivered"] td').first).to_have_text("1")  # set in the browser
    choices = page.get_by_label("Customers whose orders entered")
    await expect(choices.locator("option", has_text="Shipped")).to_have_count(0)

    # a status not flagged for analytics (typed into the URL): the orders API's refusal beside the field
    await page.goto("/analytics?status=shipped")
    await expect(page.locator("#status-error")).to_contain_text("not included in analytics")

    await choices.select_option(label="Paid (Payment)")
    # the orders' month (devtools.upstream.T0) rather than the default last 30 days
    await page.get_by_label("First day").fill("2026-11-01")
    await page.get_by_label("Last day").fill("2026-11-30")
    await page.get_by_role("button", name="Show").click()
    segment = page.locator("#segment")
    await expect(segment.locator("tbody tr")).to_have_count(1)
    await expect(segment).to_contain_text("c-o-1")
    await expect(segment).to_contain_text("Анна")
    await screenshot(page, "analytics")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download CSV").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("segment-paid-")
    rows = list(csv.DictReader(io.StringIO((await download.path()).read_text(encoding="utf-8"))))
    assert [(r["customer_id"], r["name"], r["phone"]) for r in rows] == [("c-o-1", "Анна", "+79161110001")]


async def check_viewer_reads_only(viewer: Page) -> None:
    await viewer.goto("/orders/o-1")
    await expect(viewer.locator('dd[data-type="delivery"]')).to_contain_text("Delivered")
    await expect(viewer.locator(".timeline li")).to_have_count(8)
    await expect(viewer.get_by_label("Set status", exact=True)).to_have_count(0)
    # the route refuses a viewer too, even with a valid CSRF token
    token = json.loads(await viewer.locator("body").get_attribute("hx-headers") or "{}")["X-CSRF-Token"]
    refused = await viewer.request.post(
        "/orders/o-1/status", form={"code": "shipped"}, headers={"X-CSRF-Token": token}, max_redirects=0
    )
    assert refused.status == 403
    await viewer.goto("/messages")
    await expect(viewer.locator("tr[data-message]")).to_have_count(1)
    await viewer.goto("/messages/opt-outs")
    await expect(viewer.get_by_role("button", name="Opt out")).to_have_count(0)
    await viewer.goto("/analytics?status=paid&start=2026-11-01&end=2026-11-30")  # the orders' month
    await expect(viewer.locator("#segment")).to_contain_text("c-o-1")
    # in Russian: the recipient is "Кому" (not "До", until), the period runs "С" ... "По"
    await viewer.get_by_role("button", name="RU").click()
    await expect(viewer.get_by_label("С", exact=True)).to_have_attribute("type", "date")
    await expect(viewer.get_by_label("По", exact=True)).to_have_attribute("type", "date")
    await viewer.goto("/messages")
    await expect(viewer.locator("table.messages th").nth(1)).to_have_text("Кому")


async def check_other_partner_sees_nothing(other: Page) -> None:
    response = await other.goto("/orders/o-1")
    assert response is not None and response.status == 404
    await other.goto("/orders")
    await expect(other.locator("tr[data-order]")).to_have_count(0)
    # no orders at all: the page says how orders arrive
    await expect(other.locator("#no-orders")).to_contain_text("Orders arrive from your shop's systems")
    # a URL no page answers: the console's own page, not JSON; and a favicon
    response = await other.goto("/no/such/page")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    await expect(other.get_by_role("heading", name="Not found")).to_be_visible()
    icon = await other.request.get("/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    await expect(other.locator('link[rel="icon"]')).to_have_attribute("href", "/static/favicon.svg")
    await other.goto("/messages")
    await expect(other.locator("tr[data-message]")).to_have_count(0)
    # in Russian: "Any" campaign agrees with its noun
    await other.get_by_role("button", name="RU").click()
    await expect(other.locator("#m-campaign option").first).to_have_text("Все кампании")
    await expect(other.locator("#m-state option").first).to_have_text("Все состояния")
    await other.goto("/analytics")
    await expect(other.locator("#counts tbody tr")).to_have_count(0)
