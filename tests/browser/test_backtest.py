"""The campaign editor's backtest in a real browser, in English and Russian: the campaign as typed, replayed over
the partner's real status changes (orders written through the orders API), its progress and its result; and a
backtest cancelled half-way, which stops the work on the server."""

from __future__ import annotations

import asyncio

import asyncpg
from playwright.async_api import Page, expect

from console.domain import Role
from devtools.platform import database_dsn

from .conftest import Console, SignIn, screenshot
from .test_campaigns import build_seed_campaign, define_statuses


def order(customer: str) -> dict[str, object]:
    return {
        "customer": {"id": customer, "phone": "+7 916 123-45-67", "name": "Анна", "sms_consent": True},
        "amount": "1490.00",
        "currency": "RUB",
        "placed_at": "2026-11-01T09:00:00Z",
        "statuses": {"delivery": "at_pickup_point", "payment": "invoice_issued"},
    }


async def shipped_orders(console: Console, partner: str) -> None:
    """o-1 paid, then shipped: the campaign's SMS; o-2 shipped unpaid (paid later): filtered out."""
    async with console.platform.client("orders", partner) as orders:
        for order_id, steps in (("o-1", ("paid", "shipped")), ("o-2", ("shipped", "paid"))):
            assert (await orders.put(f"/v1/orders/{order_id}", json=order(f"c-{order_id}"))).status_code == 200
            for code in steps:
                answer = await orders.post(f"/v1/orders/{order_id}/status", json={"code": code})
                assert answer.status_code == 200, answer.text


async def run_backtest(page: Page, button: str) -> None:
    await page.get_by_role("button", name=button).click()


async def seed_campaign_typed(page: Page) -> None:
    """The seed campaign in the editor, its live preview showing the SMS (the form is complete)."""
    await build_seed_campaign(page)
    target = page.get_by_role("group", name="Target status").get_by_label("Shipped")
    await target.check()  # again: the trigger's statuses are drawn anew when the status type is chosen
    await expect(page.locator("#preview").get_by_test_id("preview-text")).to_be_visible()


async def test_a_backtest_of_the_campaign_as_typed(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    await shipped_orders(console, "shop")
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await seed_campaign_typed(page)
    panel = page.locator("#backtest")
    await panel.get_by_label("Over the last (days)").fill("30")
    await panel.get_by_label("Price of one SMS segment (optional)").fill("2.50")
    await run_backtest(page, "Run the backtest")

    result = panel.get_by_test_id("backtest-result")
    await expect(result).to_be_visible(timeout=30_000)
    await expect(result.locator('[data-count="triggered"]')).to_have_text("2")
    await expect(result.locator('[data-count="filtered_out"]')).to_have_text("1")
    await expect(result.locator('[data-count="sms"]')).to_have_text("1")
    await expect(result.locator('[data-count="cost"]')).to_have_text("2.5")
    await expect(result.get_by_test_id("backtest-reasons")).to_contain_text(
        "The order's Payment status is not one the condition asks for. — 1"
    )
    samples = result.get_by_test_id("backtest-samples")
    await expect(samples).to_contain_text("o-1")
    await expect(samples).to_contain_text("Анна, your order o-1 is отгружен!")
    await expect(result.locator("svg")).to_have_count(1)  # the SMS per day
    await expect(panel.locator("progress")).to_be_hidden()
    await screenshot(page, "campaign-backtest")

    # a number of days out of range is refused beside the panel, in words
    await panel.get_by_label("Over the last (days)").fill("91")
    await run_backtest(page, "Run the backtest")
    await expect(panel.locator("[data-backtest-problem]")).to_have_text("Give a number of days from 1 to 90.")


async def test_the_backtest_in_russian(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    await shipped_orders(console, "shop")
    page = await sign_in(await console.user("ru@shop.example", Role.MARKETER, "shop", language="ru"))
    await page.goto("/campaigns/new")
    await expect(page.locator("#status-type")).to_have_value("delivery")
    await page.get_by_label("Название кампании").fill("Отгружен")
    await page.get_by_role("group", name="Новый статус").get_by_label("Отгружен").check()
    await page.get_by_label("Шаблон текста").fill("Заказ {{ order.id }} отгружен")
    await page.get_by_label("Отправлять сразу").check()
    await expect(page.locator("#preview").get_by_test_id("preview-text")).to_be_visible()
    panel = page.locator("#backtest")
    await expect(panel.get_by_role("heading")).to_have_text("Что бы она отправила?")
    await run_backtest(page, "Проверить на прошлом")
    result = panel.get_by_test_id("backtest-result")
    await expect(result).to_be_visible(timeout=30_000)
    await expect(result).to_contain_text("Было бы отправлено SMS: 2")
    await expect(result.locator('[data-count="sms"]')).to_have_text("2")
    await expect(result.get_by_test_id("backtest-samples")).to_contain_text("Заказ o-2 отгружен")


# $1 orders of partner $2, each paid, then shipped, over the last days, as the orders service stores them.
MANY_SHIPPED = """
WITH o AS (
    INSERT INTO orders (partner_id, order_id, customer_id, customer_phone, customer_name, sms_consent, amount,
                        currency, placed_at)
    SELECT $2, 'many-' || n, 'cust-' || n, '+7916' || lpad(n::text, 7, '0'), 'Анна', true, 1490, 'RUB',
           now() - interval '5 days' + n * interval '1 second'
    FROM generate_series(1, $1::int) AS n RETURNING order_id, placed_at
)
INSERT INTO status_history (partner_id, order_id, type, outcome, from_code, from_name, to_code, to_name, sequence,
                            occurred_at, recorded_at, event_id, delivery_code, delivery_name, payment_code,
                            payment_name)
SELECT $2, order_id, t.type, 'applied', t.from_code, t.from_code, t.to_code, t.to_code, t.seq, placed_at, placed_at,
       gen_random_uuid()::text, t.delivery, t.delivery, 'paid', 'paid'
FROM o, (VALUES ('payment', NULL, 'paid', 1, NULL), ('delivery', NULL, 'at_pickup_point', 2, 'at_pickup_point'),
                ('delivery', 'at_pickup_point', 'shipped', 3, 'shipped')) AS t(type, from_code, to_code, seq, delivery)
"""


async def reading_orders(console: Console) -> int:
    """The orders service's backtest queries running (or holding their transaction open)."""
    dsn = database_dsn(console.platform.infrastructure.postgres_dsn, console.platform.database("orders"))
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE '%COPY%o.customer_id, h.event_id, h.recorded_at%' AND state <> 'idle'"
            )
        )
    finally:
        await conn.close()


async def test_cancelling_a_backtest_stops_it(console: Console, sign_in: SignIn) -> None:
    await define_statuses(console, "shop")
    dsn = database_dsn(console.platform.infrastructure.postgres_dsn, console.platform.database("orders"))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(MANY_SHIPPED, 100_000, "shop")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await seed_campaign_typed(page)
    panel = page.locator("#backtest")
    await run_backtest(page, "Run the backtest")
    status = panel.locator("[data-backtest-status]")
    await expect(status).to_contain_text("changes read", timeout=30_000)  # under way: progress as it goes
    await expect(panel.locator("progress")).to_be_visible()
    assert await reading_orders(console) == 1  # the query is under way (this check sees it)
    await panel.get_by_role("button", name="Cancel").click()
    await expect(status).to_have_text("Cancelled: nothing more is read.")
    await expect(panel.get_by_test_id("backtest-result")).to_have_count(0)
    await expect(panel.get_by_role("button", name="Run the backtest")).to_be_enabled()
    for _ in range(30):  # the orders service's query ends with the connection, long before it would have finished
        if await reading_orders(console) == 0:
            break
        await asyncio.sleep(0.2)
    assert await reading_orders(console) == 0
