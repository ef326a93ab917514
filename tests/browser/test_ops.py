"""The ops pages in a real browser: readiness, topics, lag, a dead letter with its reason, and its replay."""

from __future__ import annotations

import re

from aiokafka import AIOKafkaProducer
from playwright.async_api import expect

from console.domain import Role
from contracts.topics import Topic
from devtools.platform import Platform
from servicekit.ops import dead_letters

from .conftest import Console, SignIn, screenshot, timed_goto


async def publish_garbage(platform: Platform) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=platform.infrastructure.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{platform.prefix}{Topic.ORDERS_INBOUND}", b"{not json", key=b"shop:o-1")
    finally:
        await producer.stop()


async def test_an_operator_sees_the_platform_and_replays_a_dead_letter(console: Console, sign_in: SignIn) -> None:
    platform = console.platform
    await publish_garbage(platform)
    dlq = f"{platform.prefix}{Topic.ORDERS_INBOUND_DLQ}"
    for _ in range(100):
        if await dead_letters(platform.infrastructure.kafka_bootstrap, dlq):
            break
        await console.platform_sleep(0.2)

    page = await sign_in(await console.user("ops@platform.example", Role.OPS, None))
    await expect(page).to_have_url(re.compile(r"/ops$"))
    timings: dict[str, float] = {}
    await timed_goto(page, "/ops", timings)
    for service in ("status-registry", "orders", "campaigns", "notifier"):
        await expect(page.locator(f'tr[data-service="{service}"]')).to_contain_text("ready")
    await expect(page.locator('tr[data-topic="orders.inbound.v1.dlq"]')).to_contain_text("1")
    await expect(page.get_by_role("heading", name="Consumer lag")).to_be_visible()
    await screenshot(page, "ops")

    await page.get_by_role("link", name="orders.inbound.v1.dlq").click()
    row = page.locator("tbody tr").first
    await expect(row).to_contain_text("malformed_json")
    await screenshot(page, "ops-dead-letters")
    await page.get_by_role("button", name=re.compile("^Replay all")).click()
    await expect(page.get_by_role("status").filter(has_text="1 record(s) replayed")).to_be_visible()
    # replayed garbage is dead-lettered again: the replay went to the original topic and through its consumer
    for _ in range(100):
        if len(await dead_letters(platform.infrastructure.kafka_bootstrap, dlq)) == 2:
            break
        await console.platform_sleep(0.2)
    assert len(await dead_letters(platform.infrastructure.kafka_bootstrap, dlq)) == 2
    print(f"ops page load times (ms): {timings}")

    # the ops pages are for operators only
    marketer = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await marketer.goto("/ops")
    await expect(marketer.get_by_role("heading", name="Not for your role")).to_be_visible()
    await expect(marketer.get_by_role("link", name="Operations")).to_have_count(0)
