"""Read-your-writes across services: what the registry answered for is known to orders and campaigns in the very
next request, with no sleep in between (the registry answers once its events are on the topic, and the other
services' replicas read the topic up to its end before they decide on a code).

Both halves are needed, and the tests show it: every relay and every status replica is made slower than the
requests (`lagging`), so without the registry's wait the next request reads the topic before the event is
on it, and without the replica's sync it decides before its consumer read the event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

import servicekit.catalog
from campaigns.app import create_app as create_campaigns
from campaigns.settings import CampaignsSettings
from devtools.pytest_plugin import Infrastructure, fresh_database, partner_clients
from devtools.scenario import example_status_list
from orders.app import create_app as create_orders
from orders.settings import OrdersSettings
from servicekit.outbox import BatchSender, Outgoing
from servicekit.settings import ServiceSettings
from status_registry.app import create_app as create_registry
from status_registry.settings import RegistrySettings

PARTNER = "acme"
LAG_S = 0.3


def lagging_consumer(*args: Any, **kwargs: Any) -> AIOKafkaConsumer:
    """A status replica's consumer that hands over what it fetched late."""
    consumer = AIOKafkaConsumer(*args, **kwargs)
    getmany = consumer.getmany

    async def late_getmany(*partitions: Any, **options: Any) -> Any:
        fetched = await getmany(*partitions, **options)
        await asyncio.sleep(LAG_S)
        return fetched

    consumer.getmany = late_getmany
    return consumer


@pytest.fixture
def lagging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every outbox relay publishes LAG_S late and every status replica reads LAG_S late."""
    send_all = BatchSender.send_all

    async def late_send_all(self: BatchSender, records: Any) -> None:
        batch: list[Outgoing] = list(records)
        await asyncio.sleep(LAG_S)
        await send_all(self, batch)

    monkeypatch.setattr(BatchSender, "send_all", late_send_all)
    monkeypatch.setattr(servicekit.catalog, "AIOKafkaConsumer", lagging_consumer)


@dataclass
class Platform:
    registry: httpx.AsyncClient
    orders: httpx.AsyncClient
    campaigns: httpx.AsyncClient


@pytest.fixture
async def platform(infrastructure: Infrastructure, topic_prefix: str, lagging: None) -> AsyncIterator[Platform]:
    """The registry, orders and campaigns, each with its own database, on the same topics, in this process."""
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": infrastructure.kafka_bootstrap,
        "kafka_topic_prefix": topic_prefix,
        "outbox_poll_interval_s": 0.2,
    }
    services: list[tuple[Callable[[Any], FastAPI], Callable[..., ServiceSettings], dict[str, Any]]] = [
        (create_registry, RegistrySettings, {"consumer_group": f"{topic_prefix}registry"}),
        (create_orders, OrdersSettings, {"consumer_group": f"{topic_prefix}orders"}),
        (
            create_campaigns,
            CampaignsSettings,
            {
                "consumer_group": f"{topic_prefix}campaigns",
                "sms_events_consumer_group": f"{topic_prefix}campaigns.sms-events",
            },
        ),
    ]
    async with AsyncExitStack() as stack:
        clients = []
        for create_app, settings_class, own in services:
            database = await stack.enter_async_context(fresh_database(infrastructure))
            settings = settings_class(database_url=database, **common, **own)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            make = await stack.enter_async_context(partner_clients(app, settings))
            clients.append(make(PARTNER))
        yield Platform(*clients)


def order_body(**statuses: str) -> dict[str, Any]:
    return {
        "customer": {"id": "c-1", "phone": "+7 900 123-45-67", "name": "Иван", "sms_consent": True},
        "amount": "2500.50",
        "currency": "RUB",
        "placed_at": "2026-11-01T12:00:00+00:00",
        "statuses": statuses,
    }


CAMPAIGN = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "Заказ {{ order.id }} {{ to_status.name }}",
    "sender": "DemoShop",
}


async def test_statuses_created_one_by_one_are_known_to_campaigns_in_the_next_request(platform: Platform) -> None:
    wanted = {"accepted", "at_pickup_point", "shipped", "invoice_issued", "paid"}
    for status in (s for s in example_status_list() if s["code"] in wanted):
        created = await platform.registry.post("/v1/statuses", json=status)
        assert created.status_code == 201, created.text

    created = await platform.campaigns.post("/v1/campaigns", json=CAMPAIGN)  # no sleep, no retry
    assert created.status_code == 201, created.text
    activated = await platform.campaigns.post(f"/v1/campaigns/{created.json()['id']}/activate")
    assert activated.status_code == 200, activated.text


async def test_orders_see_a_status_created_renamed_and_archived_a_moment_ago(platform: Platform) -> None:
    synced = await platform.registry.put("/v1/statuses", json={"statuses": example_status_list()})
    assert synced.status_code == 200, synced.text
    placed = await platform.orders.put("/v1/orders/o-1", json=order_body(general="accepted"))
    assert placed.status_code == 200, placed.text

    new = {"code": "returned", "name": "Возвращён", "type": "delivery"}
    assert (await platform.registry.post("/v1/statuses", json=new)).status_code == 201
    assert (await platform.orders.post("/v1/orders/o-1/status", json={"code": "at_pickup_point"})).status_code == 200
    moved = await platform.orders.post("/v1/orders/o-1/status", json={"code": "returned"})
    assert moved.status_code == 200, moved.text

    renamed = await platform.registry.patch(
        "/v1/statuses/returned", json={"name": "Возвращён продавцу"}, headers={"If-Match": '"1"'}
    )
    assert renamed.status_code == 200, renamed.text
    again = await platform.orders.post("/v1/orders/o-1/status", json={"code": "returned"})
    assert again.status_code == 200, again.text
    assert again.json()["order"]["statuses"]["delivery"]["name"] == "Возвращён продавцу"

    assert (await platform.registry.delete("/v1/statuses/delivered")).status_code == 200
    refused = await platform.orders.post("/v1/orders/o-1/status", json={"code": "delivered"})
    assert refused.status_code == 422, refused.text
    assert "archived" in refused.text
