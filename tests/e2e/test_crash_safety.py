"""kill -9 each service in turn while a few hundred orders flow: every expected SMS exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaProducer

from devtools.platform import SERVICES, Platform
from devtools.scenario import define_example
from devtools.upstream import Upstream

from .test_seed_scenario import until

CHUNK = 60  # orders published between two kills


async def publish(upstream: Upstream, numbers: range) -> set[str]:
    """Publish the orders' journeys; every third order is never paid. Returns the orders that must get an SMS."""
    expected = set()
    for n in numbers:
        order_id = f"o-{n}"
        await upstream.order(order_id, f"Клиент {n}", "invoice_issued", phone=f"+7916{2000000 + n:07d}")
        if n % 3:
            await upstream.report(order_id, "paid", 2)
            expected.add(order_id)
        await upstream.report(order_id, "shipped", 3)
    return expected


async def test_killing_each_service_mid_stream_loses_and_duplicates_no_sms(
    platform: Platform, producer: AIOKafkaProducer
) -> None:
    await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    expected: set[str] = set()
    for chunk, service in enumerate(SERVICES):
        # A chunk goes out, and its service dies while that chunk is still being worked on.
        expected |= await publish(upstream, range(chunk * CHUNK, (chunk + 1) * CHUNK))
        platform.kill(service)
        expected |= await publish(upstream, range((chunk + 4) * CHUNK, (chunk + 4) * CHUNK + CHUNK // 2))
        platform.start(service)
        await platform.wait_ready(service)

    await until(lambda: len(platform.sent_sms()) >= len(expected), f"{len(expected)} SMS", timeout_s=180)
    await asyncio.sleep(3)  # late duplicates would show up now
    sent = platform.sent_sms()
    per_command = Counter(sms["id"] for sms in sent)
    assert [cid for cid, n in per_command.items() if n > 1] == [], "an SMS went out twice"
    orders = sorted(sms["text"].split("order ")[1].split(" ")[0] for sms in sent)
    assert orders == sorted(expected), set(expected) ^ set(orders)
