"""Analytics' charts in a real browser, in English and Russian: the default period (the last 30 days) in the form,
a chart of entries per day for each flagged status and the moves between them, with the figures of orders this
test creates through the orders API; the same figures as tables; a reversed period refused beside its field; the
page readable on a phone and at 1366 px."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from babel.dates import format_date
from babel.numbers import format_percent
from playwright.async_api import Page, expect

from console.domain import Role
from devtools.scenario import example_status_list

from .conftest import Console, SignIn, screenshot

PARTNER = "charts"
ZONE = ZoneInfo("Europe/Moscow")  # a new console user's time zone (ConsoleSettings.default_time_zone)
TODAY = datetime.now(ZONE).date()
DAYS = [TODAY - timedelta(days=n) for n in range(29, -1, -1)]  # the default period, oldest first

WORDS = {
    "en": {
        "title": "Orders entering “Paid” per day",
        "moves": "Moves between statuses flagged for analytics",
        "reversed": "The last day is before the first day. Choose a last day on or after the first one.",
        "delivered": "Delivered",
    },
    "ru": {
        "title": "Заказы, перешедшие в статус «Оплачен», по дням",
        "moves": "Переходы между статусами, учитываемыми в аналитике",
        "reversed": "Последний день периода раньше первого. Выберите последний день не раньше первого.",
        "delivered": "Доставлен",
    },
}


def at(days_ago: int, hour: int) -> str:
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour), ZONE).isoformat()


async def place(orders: httpx.AsyncClient, order_id: str, *moves: tuple[str, str]) -> None:
    body = {
        "customer": {"id": f"c-{order_id}", "phone": "+79161110001", "name": "Анна", "sms_consent": True},
        "amount": "1500.00",
        "currency": "RUB",
        "placed_at": at(10, 9),
        "statuses": {"general": "accepted", "delivery": "at_pickup_point", "payment": "invoice_issued"},
        "occurred_at": at(10, 9),
    }
    assert (await orders.put(f"/v1/orders/{order_id}", json=body)).status_code == 200
    for code, when in moves:
        answer = await orders.post(f"/v1/orders/{order_id}/status", json={"code": code, "occurred_at": when})
        assert answer.status_code == 200, answer.text


async def create_orders(console: Console) -> None:
    """Flagged: completed, delivered, paid. Paid: 2 five days ago, 1 three days ago; delivered: 2 three days ago;
    completed: 2 yesterday. Moves: paid to delivered 2 (of 3 from paid), paid to completed 1, delivered to
    completed 1 (all of delivered's)."""
    async with console.platform.client("status-registry", PARTNER) as registry:
        answer = await registry.put("/v1/statuses", json={"statuses": example_status_list()})
        assert answer.status_code == 200, answer.text
    async with console.platform.client("orders", PARTNER) as orders:
        await place(orders, "o-1", ("paid", at(5, 12)), ("delivered", at(3, 12)), ("completed", at(1, 12)))
        await place(orders, "o-2", ("paid", at(5, 13)), ("delivered", at(3, 13)))
        await place(orders, "o-3", ("paid", at(3, 14)), ("completed", at(1, 14)))


def per_day(**counts: int) -> list[str]:
    """Every day's count as the chart should hold it: `ago_5=2` is 2 five days ago, every other day 0."""
    return [str(counts.get(f"ago_{(TODAY - day).days}", 0)) for day in DAYS]


async def test_analytics_charts_in_english_and_russian(console: Console, sign_in: SignIn) -> None:
    await create_orders(console)
    for language in ("en", "ru"):
        email = await console.user(f"{language}@charts.example", Role.MARKETER, PARTNER, language=language)
        page = await sign_in(email)
        await check_default_period_and_charts(page, language)
        await check_reversed_period_refused(page, language)
        await check_readable_on_a_phone_and_at_1366(page)


async def check_default_period_and_charts(page: Page, language: str) -> None:
    words = WORDS[language]
    answer = await page.goto("/analytics")
    assert answer is not None and answer.status == 200
    await expect(page.locator("#start")).to_have_value(DAYS[0].isoformat())
    await expect(page.locator("#end")).to_have_value(TODAY.isoformat())
    await expect(page.locator("#period-hint")).to_contain_text("Europe/Moscow")
    await screenshot(page, "analytics-charts" if language == "en" else "analytics-charts-ru")

    expected = {
        "paid": per_day(ago_5=2, ago_3=1),
        "delivered": per_day(ago_3=2),
        "completed": per_day(ago_1=2),
    }
    for code, values in expected.items():
        figure = page.locator(f'figure[data-code="{code}"]')
        chart = figure.locator('svg[role="img"]')
        await expect(chart.locator("rect")).to_have_count(30)  # every day, those with none too
        assert [await bar.get_attribute("data-value") for bar in await chart.locator("rect").all()] == values
        await expect(chart.locator("rect.zero")).to_have_count(values.count("0"))
        # the same figures as a table, days in the user's language
        await figure.locator("summary").click()
        rows = figure.locator("tbody tr")
        await expect(rows).to_have_count(30)
        await expect(rows.locator("td")).to_have_text(values)
        first_day = format_date(DAYS[0], format="medium", locale=language)
        await expect(rows.first.locator("th")).to_have_text(first_day)
    paid = page.locator('figure[data-code="paid"] svg[role="img"]')
    await expect(paid.locator("title").first).to_have_text(words["title"])
    described_by = await paid.get_attribute("aria-describedby")
    assert described_by and await page.locator(f"#{described_by}").text_content()
    await expect(page.locator('figure[data-code="paid"] figcaption')).to_contain_text("3")
    await expect(page.locator("#counts tbody tr")).to_have_count(3)  # only the flagged statuses

    # the moves between flagged statuses, with counts and shares
    moves = page.locator("#moves-chart")
    await expect(moves).to_have_attribute("role", "img")
    await expect(moves.locator("title").first).to_have_text(words["moves"])
    assert [await row.get_attribute("data-value") for row in await moves.locator("g.flow").all()] == ["1", "2", "1"]
    await page.locator("#moves-figure summary").click()
    shares = {
        ("delivered", "completed"): ("1", 1.0),
        ("paid", "delivered"): ("2", 2 / 3),
        ("paid", "completed"): ("1", 1 / 3),
    }
    rows = page.locator("#moves tbody tr")
    await expect(rows).to_have_count(3)
    for (came_from, went_to), (count, share) in shares.items():
        cells = page.locator(f'#moves tr[data-from="{came_from}"][data-to="{went_to}"] td')
        await expect(cells.nth(2)).to_have_text(count)
        await expect(cells.nth(3)).to_have_text(format_percent(share, locale=language))
    await expect(page.locator('#moves tr[data-from="paid"][data-to="delivered"] td').nth(1)).to_have_text(
        words["delivered"]
    )


async def check_reversed_period_refused(page: Page, language: str) -> None:
    await page.locator("#start").fill(TODAY.isoformat())
    await page.locator("#end").fill((TODAY - timedelta(days=1)).isoformat())
    async with page.expect_response(lambda r: "/analytics?" in r.url) as answered:
        await page.locator("#show").click()
    assert (await answered.value).status == 422
    await expect(page.locator("#end-error")).to_have_text(WORDS[language]["reversed"])
    await expect(page.locator("#end")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#end")).to_have_attribute("aria-describedby", "end-error")
    await expect(page.locator("#start")).to_have_value(TODAY.isoformat())  # what was typed stays to be corrected
    await expect(page.locator("svg.chart")).to_have_count(0)


async def check_readable_on_a_phone_and_at_1366(page: Page) -> None:
    for width, height in ((390, 844), (1366, 768)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto("/analytics")
        overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a {width} px screen"
        for chart in await page.locator("svg.chart").all():
            box = await chart.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        label = await page.locator('figure[data-code="paid"] svg text.day').first.bounding_box()
        assert label is not None and label["height"] >= 10, "the days under a chart are too small to read"
        bars = await page.locator('figure[data-code="paid"] rect.bar').all()
        widths = [box["width"] for box in [await bar.bounding_box() for bar in bars] if box]
        assert min(widths) >= 3, "a day's bar is too thin to see"
