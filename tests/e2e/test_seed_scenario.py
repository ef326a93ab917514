"""The product documentation's example, end to end: four processes, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported
from contracts.topics import Topic, prefixed
from devtools.platform import Platform
from devtools.pytest_plugin import read_topic, wait_until
from devtools.scenario import define_example
from devtools.upstream import T0, Upstream


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    async def check() -> bool:
        return condition()

    await wait_until(check, timeout_s=timeout_s, what=what)


async def test_the_seed_scenario_sends_exactly_the_expected_sms(platform: Platform, producer: AIOKafkaProducer) -> None:
    campaign_id = await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", 2)
    await upstream.report("o-1", "shipped", 3)  # paid, then shipped: SMS
    await upstream.order("o-2", "Борис", "invoice_issued")
    await upstream.report("o-2", "shipped", 2)  # shipped but not paid: no SMS
    await upstream.order("o-3", "Вера", "invoice_issued")
    await upstream.report("o-3", "awaiting_payment", 2)
    await upstream.report("o-3", "shipped", 3)  # awaiting payment: no SMS
    await upstream.order("o-4", "Глеб", "invoice_issued")
    await upstream.report("o-4", "paid", 2)
    await upstream.report("o-4", "shipped", 3)  # SMS

    await until(lambda: len(platform.sent_sms()) >= 2, "two SMS")
    await asyncio.sleep(2)  # and no third one
    sent = sorted(platform.sent_sms(), key=lambda sms: sms["to"])
    assert [(sms["to"], sms["text"]) for sms in sent] == [
        ("+79161110001", "Анна, your order o-1 is отгружен!"),
        ("+79161110004", "Глеб, your order o-4 is отгружен!"),
    ]
    async with platform.client("notifier", "demo") as notifier:
        messages = (await notifier.get("/v1/messages", params={"campaign_id": campaign_id})).json()["items"]
    assert sorted(m["order_id"] for m in messages) == ["o-1", "o-4"]

    async with platform.client("campaigns", "demo") as campaigns:

        async def reported() -> bool:
            stats = (await campaigns.get(f"/v1/campaigns/{campaign_id}/stats")).json()
            return bool(stats["sms_sent"] == 2)

        await wait_until(reported, timeout_s=30, what="the notifier's reports in the campaign stats")
        stats = (await campaigns.get(f"/v1/campaigns/{campaign_id}/stats")).json()
    assert stats["triggered"] == 4 and stats["fired"] == 2
    assert stats["filtered_out_by_reason"] == {"payment_status": 2}


async def test_one_trace_follows_an_order_from_the_upstream_event_to_the_sms(
    platform: Platform, producer: AIOKafkaProducer
) -> None:
    await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", 2)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    shipped = Envelope.wrap(
        OrderStatusReported(order_id="o-1", code="shipped", occurred_at=T0 + timedelta(minutes=3), source_sequence=3),
        source="/shop",
        partner_id="demo",
    )
    await producer.send_and_wait(
        upstream.topic,
        shipped.to_bytes(),
        key=shipped.key(),
        headers=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01".encode())],
    )
    sms_events = prefixed(Topic.SMS_EVENTS, platform.prefix)

    async def dispatched() -> list[Any]:
        records = await read_topic(platform.infrastructure.kafka_bootstrap, sms_events)
        return [r for r in records if dict(r.headers).get("ce_type") == b"sms.dispatched.v1"]

    async def has_dispatched() -> bool:
        return bool(await dispatched())

    await wait_until(has_dispatched, timeout_s=60, what="SmsDispatched")
    for topic in (Topic.ORDER_STATUS_CHANGED, Topic.SEND_SMS):
        records = await read_topic(platform.infrastructure.kafka_bootstrap, prefixed(topic, platform.prefix))
        traced = [r for r in records if trace_id.encode() in dict(r.headers).get("traceparent", b"")]
        assert traced, f"no {topic} record continues the trace"
    (record,) = await dispatched()
    assert dict(record.headers)["traceparent"].decode().split("-")[1] == trace_id
