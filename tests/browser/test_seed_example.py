"""The product documentation's example, done entirely in the browser as a newcomer would: first sign-in with a
one-time password, the seed's statuses through the Add status dialog, the seed campaign in the editor, orders
published upstream, their status changes on the order page, the SMS on the messages page, analytics with its CSV,
opt-outs, and the Russian interface. Another partner's user sees none of it."""

from __future__ import annotations

import csv
import io
import re

from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, expect

from console.cli import create_user
from console.domain import Role
from console.settings import ConsoleSettings
from devtools.platform import CONSOLE, database_dsn
from devtools.scenario import ANALYTICS, EXAMPLE_STATUSES
from devtools.upstream import Upstream

from .conftest import Console, SignIn, timed_goto
from .test_campaigns import build_seed_campaign
from .test_statuses import add_status

NEW_PASSWORD = "my-own-password-2026"


async def first_sign_in(browser: Browser, console: Console) -> Page:
    """`make user`'s one-time password, changed at the first sign-in."""
    dsn = database_dsn(console.platform.infrastructure.postgres_dsn, console.platform.database(CONSOLE))
    created = await create_user(ConsoleSettings(database_url=dsn), "anna@shop.example", Role.MARKETER, "shop")
    context = await browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.get_by_label("Email").fill("anna@shop.example")
    await page.get_by_label("Password").fill(created.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/account/password"))
    await page.get_by_label("Current password").fill(created.password)
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("New password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("heading", name="Order statuses")).to_be_visible()
    return page


async def test_a_newcomer_does_the_seed_example_in_the_browser(
    console: Console, sign_in: SignIn, browser: Browser, producer: AIOKafkaProducer
) -> None:
    page = await first_sign_in(browser, console)
    timings: dict[str, float] = {}

    # 1. Settings > Order statuses: the seed's statuses, Cyrillic names, through the Add status dialog
    for status_type, code, name_ru, name_en in EXAMPLE_STATUSES:
        await add_status(page, status_type, code, name_ru, name_en, code in ANALYTICS)

    # 2. the campaign editor: delivery -> "Shipped" while payment is "Paid" -> SMS; preview; activate
    await build_seed_campaign(page)
    await expect(page.locator("#preview [data-outcome]")).to_have_attribute("data-outcome", "fired")
    await page.get_by_role("button", name="Save as draft").click()
    await page.get_by_role("button", name="Activate").click()
    await expect(page.get_by_role("status").filter(has_text="is active")).to_be_visible()

    # 3. orders published upstream: o-1 pays then ships (an SMS), o-2 ships unpaid (none)
    upstream = Upstream(producer, console.platform, "shop")
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", 2)
    await upstream.report("o-1", "shipped", 3)
    await upstream.order("o-2", "Борис", "invoice_issued")
    await upstream.report("o-2", "shipped", 2)

    # 4. the order page: current statuses by name, the history timeline with its source
    await page.goto("/orders")
    await page.get_by_label("Order id").fill("o-1")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/orders/o-1$"))
    for _ in range(30):
        if await page.locator('dd[data-type="delivery"]').inner_text() != "—":
            break
        await page.wait_for_timeout(500)
        await page.reload()
    await expect(page.locator('dd[data-type="delivery"]')).to_contain_text("Shipped")
    await expect(page.locator('dd[data-type="payment"]')).to_contain_text("Paid")
    await expect(page.locator('li[data-outcome="applied"]')).to_have_count(5)
    await expect(page.locator(".timeline")).to_contain_text("source: upstream event")
    await timed_goto(page, "/orders/o-1", timings)

    # "set status" by name; a transition the status forbids shows its refusal beside the field
    await page.get_by_label("Set status", exact=True).select_option(label="Delivered")
    await page.get_by_role("button", name="Set status").click()
    await expect(page.locator('dd[data-type="delivery"]')).to_contain_text("Delivered")
    await expect(page.locator(".timeline li").first).to_contain_text("source: HTTP API")
    async with console.platform.client("status-registry", "shop") as registry:
        delivered = await registry.get("/v1/statuses/delivered")
        final = await registry.patch(
            "/v1/statuses/delivered", json={"allowed_next": []}, headers={"If-Match": delivered.headers["etag"]}
        )
        assert final.status_code == 200, final.text
    await page.get_by_label("Set status", exact=True).select_option(label="Shipped")
    await page.get_by_role("button", name="Set status").click()
    await expect(page.locator("#code-error")).to_be_visible()

    await timed_goto(page, "/orders", timings)
    await expect(page.locator('tr[data-order="o-2"]')).to_contain_text("Борис")

    # 5. the messages page: the one SMS, its text, state, and the campaign and order it came from
    await page.goto("/messages")
    for _ in range(60):
        if await page.locator("tr[data-message]").count():
            break
        await page.wait_for_timeout(500)
        await page.reload()
    message = page.locator("tr[data-message]")
    await expect(message).to_have_count(1)
    await expect(message).to_contain_text("Анна, your order o-1 is отгружен!")
    await expect(message.get_by_role("link", name="o-1")).to_have_attribute("href", "/orders/o-1")
    await expect(message.get_by_role("link", name="Shipped and paid")).to_be_visible()
    await timed_goto(page, "/messages", timings)

    # opt-outs: a bad number is refused beside the field; a good one is added and removed
    await page.goto("/messages/opt-outs")
    await page.get_by_label("Phone number").fill("12")
    await page.get_by_role("button", name="Opt out").click()
    await expect(page.locator("#phone-error")).to_be_visible()
    await page.get_by_label("Phone number").fill("+79161110002")
    await page.get_by_role("button", name="Opt out").click()
    await expect(page.locator('tr[data-phone="+79161110002"]')).to_be_visible()
    await page.get_by_role("button", name="Remove +79161110002").click()
    await expect(page.locator('tr[data-phone="+79161110002"]')).to_have_count(0)

    # 6. analytics: flagged statuses only; the "Paid" segment, and its CSV
    await timed_goto(page, "/analytics", timings)
    await expect(page.locator('#counts tr[data-code="paid"]')).to_be_visible()
    await expect(page.locator('#counts tr[data-code="shipped"]')).to_have_count(0)  # not flagged for analytics
    await page.get_by_label("Customers whose orders entered").select_option(label="Paid (Payment)")
    await page.get_by_label("First day").fill("2026-11-01")  # the orders' month (devtools.upstream.T0)
    await page.get_by_label("Last day").fill("2026-11-30")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#segment")).to_contain_text("c-o-1")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download CSV").click()
    path = await (await download_info.value).path()
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert [(r["customer_id"], r["name"]) for r in rows] == [("c-o-1", "Анна")]

    # 7. the Russian interface
    await page.goto("/orders/o-1")
    await page.get_by_role("button", name="RU").click()
    await expect(page.get_by_role("heading", name="Текущие статусы")).to_be_visible()
    await expect(page.locator('dd[data-type="payment"]')).to_contain_text("Оплачен")

    # 8. another partner's user sees none of it
    other = await sign_in(await console.user("m@other.example", Role.MARKETER, "other"))
    response = await other.goto("/orders/o-1")
    assert response is not None and response.status == 404
    await other.goto("/messages")
    await expect(other.locator("tr[data-message]")).to_have_count(0)
    await other.goto("/campaigns")
    await expect(other.get_by_text("Shipped and paid")).to_have_count(0)

    print(f"console page load times (ms): {timings}")
