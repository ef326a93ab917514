"""kill -9 each service in turn while a few hundred orders flow: every expected SMS exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaProducer

from .conftest import define_example
from .platform import SERVICES, Platform
from .test_seed_scenario import PHONES, Upstream, until

ORDERS = 300


async def flow(upstream: Upstream) -> set[str]:
    """Publish the orders' journeys; every third order is never paid. Returns the orders that must get an SMS."""
    expected = set()
    for n in range(ORDERS):
        order_id = f"o-{n}"
        PHONES[order_id] = f"+7916{2000000 + n:07d}"
        await upstream.order(order_id, f"Клиент {n}", "invoice_issued")
        if n % 3:
            await upstream.report(order_id, "paid", 2)
            expected.add(order_id)
        await upstream.report(order_id, "shipped", 3)
        await asyncio.sleep(0.1)  # a steady stream rather than one burst, so the kills land mid-stream
    return expected


async def test_killing_each_service_mid_stream_loses_and_duplicates_no_sms(
    platform: Platform, producer: AIOKafkaProducer
) -> None:
    await define_example(platform, "demo")
    publishing = asyncio.create_task(flow(Upstream(producer, platform, "demo")))
    killed_mid_stream = []
    for service in SERVICES:
        await asyncio.sleep(1.5)
        killed_mid_stream.append(not publishing.done())
        platform.kill(service)
        await asyncio.sleep(0.5)
        platform.start(service)
        await platform.wait_ready(service)
    expected = await publishing
    assert all(killed_mid_stream), "a kill came after the stream ended: slow the stream down"

    await until(lambda: len(platform.sent_sms()) >= len(expected), f"{len(expected)} SMS", timeout_s=180)
    await asyncio.sleep(3)  # late duplicates would show up now
    sent = platform.sent_sms()
    per_command = Counter(sms["id"] for sms in sent)
    assert [cid for cid, n in per_command.items() if n > 1] == [], "an SMS went out twice"
    orders = sorted(sms["text"].split("order ")[1].split(" ")[0] for sms in sent)
    assert orders == sorted(expected), set(expected) ^ set(orders)
