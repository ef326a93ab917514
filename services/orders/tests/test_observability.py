"""Tracing through Kafka headers, AsyncAPI docs and domain metrics of the orders service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from contracts.envelope import Envelope
from contracts.inbound import OrderUpserted
from contracts.orders import Customer
from contracts.statuses import StatusCodes
from devtools.pytest_plugin import read_topic, wait_until
from orders.settings import OrdersSettings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_the_trace_continues_from_the_upstream_record_to_the_status_change(
    upstream: Any, orders_settings: OrdersSettings, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    data = OrderUpserted(
        order_id="o-t", customer=Customer(id="c"), amount="1.00", currency="RUB",
        placed_at=datetime.now(UTC), statuses=StatusCodes(general="accepted"), occurred_at=datetime.now(UTC),
    )  # fmt: skip
    envelope = Envelope.wrap(data, source="/shop", partner_id="demo")
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
    await upstream.producer.send_and_wait(
        upstream.topic, envelope.to_bytes(), key=envelope.key(), headers=[("traceparent", traceparent)]
    )

    async def published() -> bool:
        return bool(await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed))

    await wait_until(published, what="the status change")
    (record,) = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
    headers = dict(record.headers)
    assert headers["traceparent"].decode().split("-")[1] == TRACE_ID
    assert headers["correlationid"].decode() == envelope.id and headers["ce_type"] == b"order.status-changed.v1"
    metrics = (await client_for("demo").get("/metrics")).text
    received = [line for line in metrics.splitlines() if line.startswith("faststream_received_messages_total{")]
    assert any('app_name="orders"' in line and orders_settings.topic_inbound in line for line in received), received


async def test_asyncapi_and_metrics(
    client_for: Callable[..., httpx.AsyncClient], orders_settings: OrdersSettings
) -> None:
    client = client_for("demo")
    document = (await client.get("/asyncapi.json")).json()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {
        orders_settings.topic_inbound,
        orders_settings.topic_inbound_retry,
        orders_settings.topic_status_changed,
    } <= addresses
    html = await client.get("/asyncapi")
    assert html.status_code == 200 and "AsyncAPI" in html.text
    await client.put(
        "/v1/orders/o-m",
        json={"customer": {"id": "c"}, "amount": "1", "currency": "RUB", "placed_at": "2026-11-01T00:00:00Z",
              "statuses": {"general": "accepted"}},
    )  # fmt: skip
    metrics = (await client.get("/metrics")).text
    assert 'order_status_changes_total{type="general"}' in metrics
