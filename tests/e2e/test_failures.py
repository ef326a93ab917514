"""End to end under bad input, duplicates, reordering, and across partners."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from aiokafka import AIOKafkaProducer

from contracts.inbound import OrderStatusReported
from contracts.topics import Topic, prefixed
from devtools.platform import Platform
from devtools.pytest_plugin import read_topic, wait_until
from devtools.scenario import define_example
from devtools.upstream import T0, Upstream

from .test_seed_scenario import until


async def test_duplicates_and_out_of_order_events_give_one_change_and_one_sms_each(
    platform: Platform, producer: AIOKafkaProducer
) -> None:
    await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    created = await upstream.order("o-1", "Анна", "invoice_issued", seq=1)
    paid = await upstream.report("o-1", "paid", seq=2)
    shipped = await upstream.report("o-1", "shipped", seq=4)
    for envelope in (created, paid, shipped, shipped, paid):  # the upstream system retried
        await producer.send_and_wait(upstream.topic, envelope.to_bytes(), key=envelope.key())
    late = OrderStatusReported(
        order_id="o-1", code="awaiting_payment", occurred_at=T0 + timedelta(minutes=3), source_sequence=3
    )
    await upstream.send(late)  # older than 'paid'? no: seq 3 > 2, so it applies; then shipped (4) already came
    stale = OrderStatusReported(order_id="o-1", code="at_delivery_point", occurred_at=T0, source_sequence=1)
    await upstream.send(stale)  # older than 'shipped' (seq 4): ignored

    await until(lambda: len(platform.sent_sms()) >= 1, "the SMS")
    await asyncio.sleep(2)
    assert len(platform.sent_sms()) == 1
    changes = await read_topic(
        platform.infrastructure.kafka_bootstrap, prefixed(Topic.ORDER_STATUS_CHANGED, platform.prefix)
    )
    ids = {dict(r.headers)["ce_id"] for r in changes}
    assert len(ids) == 6  # 3 from the upsert, paid, shipped, awaiting_payment: each once
    async with platform.client("orders", "demo") as orders:
        order = (await orders.get("/v1/orders/o-1")).json()
    assert order["statuses"]["delivery"]["code"] == "shipped"
    assert ("at_delivery_point", "stale") in [(h["to_code"], h["outcome"]) for h in order["history"]]


async def test_malformed_oversized_and_wrong_partner_input_is_dead_lettered_and_the_rest_flows(
    platform: Platform, producer: AIOKafkaProducer
) -> None:
    await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    await producer.send_and_wait(upstream.topic, b"{not json", key=b"demo:o-x")
    await producer.send_and_wait(upstream.topic, b"{" + b" " * 70_000 + b"}", key=b"demo:o-x")
    foreign = await upstream.order("o-2", "Борис", "invoice_issued")
    await producer.send_and_wait(upstream.topic, foreign.to_bytes(), key=b"acme:o-2")  # another partner's key
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", seq=2)
    await upstream.report("o-1", "shipped", seq=3)

    await until(lambda: len(platform.sent_sms()) >= 1, "the SMS of the valid order")
    dlq = prefixed(Topic.ORDERS_INBOUND_DLQ, platform.prefix)

    async def three_dead() -> bool:
        return len(await read_topic(platform.infrastructure.kafka_bootstrap, dlq)) >= 3

    await wait_until(three_dead, timeout_s=30, what="three dead letters")
    dead = await read_topic(platform.infrastructure.kafka_bootstrap, dlq)
    assert sorted(dict(r.headers)["dlq-reason"].decode() for r in dead) == [
        "key_mismatch",
        "malformed_json",
        "oversized",
    ]


async def test_partners_are_isolated_across_all_four_apis(platform: Platform, producer: AIOKafkaProducer) -> None:
    campaign_id = await define_example(platform, "demo")
    upstream = Upstream(producer, platform, "demo")
    await upstream.order("o-1", "Анна", "invoice_issued")
    await upstream.report("o-1", "paid", seq=2)
    await upstream.report("o-1", "shipped", seq=3)
    await until(lambda: len(platform.sent_sms()) >= 1, "the SMS")

    async with platform.client("notifier", "demo") as notifier:
        (message,) = (await notifier.get("/v1/messages")).json()["items"]
    checks = [
        ("status-registry", "/v1/statuses/paid"),
        ("orders", "/v1/orders/o-1"),
        ("campaigns", f"/v1/campaigns/{campaign_id}"),
        ("notifier", f"/v1/messages/{message['message_id']}"),
    ]
    for service, path in checks:
        async with platform.client(service, "demo") as owner, platform.client(service, "acme") as stranger:
            assert (await owner.get(path)).status_code == 200, (service, path)
            assert (await stranger.get(path)).status_code == 404, (service, path)
    async with platform.client("notifier", "acme") as stranger:
        assert (await stranger.get("/v1/messages")).json()["items"] == []
    async with platform.client("orders", "acme") as stranger:
        assert (await stranger.get("/v1/orders")).json()["items"] == []


async def test_a_status_an_active_campaign_names_cannot_be_archived_until_it_is_paused(platform: Platform) -> None:
    campaign_id = await define_example(platform, "demo")
    async with (
        platform.client("status-registry", "demo") as registry,
        platform.client("campaigns", "demo") as campaigns,
    ):

        async def refused() -> bool:
            answer = await registry.delete("/v1/statuses/shipped")
            if answer.status_code == 200:  # the usage had not arrived yet: undo the archive and ask again
                await registry.post("/v1/statuses/shipped/restore")
            return answer.status_code == 409 and "Shipped and paid" in answer.json()["detail"]

        await wait_until(refused, timeout_s=30, what="the registry to refuse archiving 'shipped'")
        assert (await campaigns.post(f"/v1/campaigns/{campaign_id}/pause")).status_code == 200

        async def archived() -> bool:
            return (await registry.delete("/v1/statuses/shipped")).status_code == 200

        await wait_until(archived, timeout_s=30, what="archiving once the campaign is paused")
