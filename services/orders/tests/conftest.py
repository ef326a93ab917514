from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported, OrderUpserted
from contracts.orders import Customer
from contracts.statuses import StatusCodes
from devtools.pytest_plugin import ClientFactory, Infrastructure, partner_clients
from devtools.scenario import example_definitions, publish_definitions
from orders.app import create_app
from orders.settings import OrdersSettings


@pytest.fixture
def orders_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> OrdersSettings:
    return OrdersSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
        unknown_status_retry_delays_s=(0.3, 0.6, 1.2),
        consumer_group=f"orders-{topic_prefix}",  # a group per test: no waiting for a previous test's members
    )


@pytest.fixture
async def statuses(orders_settings: OrdersSettings) -> None:
    """The example statuses for partners demo and acme, on the registry topic before the service starts."""
    topic = orders_settings.topic_status_definitions
    await publish_definitions(
        orders_settings.kafka_bootstrap_servers, topic, example_definitions("demo") + example_definitions("acme")
    )


@pytest.fixture
async def orders_app(orders_settings: OrdersSettings, statuses: None) -> AsyncIterator[FastAPI]:
    app = create_app(orders_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client_for(orders_app: FastAPI, orders_settings: OrdersSettings) -> AsyncIterator[ClientFactory]:
    """`client_for("acme")`: an HTTP client holding a token of partner acme (scopes as given)."""
    async with partner_clients(orders_app, orders_settings) as make:
        yield make


@pytest.fixture
async def upstream(orders_settings: OrdersSettings, orders_app: FastAPI) -> AsyncIterator[Upstream]:
    """An upstream producer; the orders service runs while it is in use."""
    producer = AIOKafkaProducer(bootstrap_servers=orders_settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    yield Upstream(producer, orders_settings.topic_inbound)
    await producer.stop()


T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Upstream:
    """An upstream system publishing to orders.inbound.v1."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, envelope: Envelope[Any]) -> Envelope[Any]:
        await self.producer.send_and_wait(self.topic, envelope.to_bytes(), key=envelope.key())
        return envelope

    async def raw(self, value: bytes, key: bytes = b"demo:x") -> None:
        await self.producer.send_and_wait(self.topic, value, key=key)

    async def upsert(
        self, order_id: str, partner: str = "demo", *, seq: int | None = None, at: datetime = T0,
        customer: Customer | None = None, amount: str = "1990.00", **codes: str,
    ) -> Envelope[Any]:  # fmt: skip
        data = OrderUpserted(
            order_id=order_id,
            customer=customer or Customer(id=f"c-{order_id}", phone="+79001234567", name="Анна", sms_consent=True),
            amount=amount,
            currency="RUB",
            placed_at=T0,
            statuses=StatusCodes(**codes),
            source_sequence=seq,
            occurred_at=at,
        )
        return await self.send(Envelope.wrap(data, source="/shop", partner_id=partner))

    async def report(
        self, order_id: str, code: str, partner: str = "demo", *, seq: int | None = None, at: datetime = T0,
        event_id: str | None = None,
    ) -> Envelope[Any]:  # fmt: skip
        data = OrderStatusReported(order_id=order_id, code=code, occurred_at=at, source_sequence=seq)
        return await self.send(Envelope.wrap(data, source="/delivery", partner_id=partner, event_id=event_id))
