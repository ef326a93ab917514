from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contracts.envelope import Envelope
from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.sms import SmsFailed
from contracts.statuses import CurrentStatuses, StatusRef, StatusType
from devtools.pytest_plugin import ClientFactory, Infrastructure, partner_clients, wait_until
from webhooks.app import create_app
from webhooks.settings import WebhooksSettings


class TestClock:
    """The schedule's clock, moved by the test."""

    __test__ = False

    def __init__(self) -> None:
        self.current = datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def webhooks_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> WebhooksSettings:
    return WebhooksSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        webhooks_allow_private_targets=True,
        delivery_poll_interval_s=0.1,
        delivery_timeout_s=2.0,
        consumer_linger_ms=0,
    )


@pytest.fixture
async def webhooks_app(webhooks_settings: WebhooksSettings, clock: TestClock) -> AsyncIterator[FastAPI]:
    app = create_app(webhooks_settings, clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client_for(webhooks_app: FastAPI, webhooks_settings: WebhooksSettings) -> AsyncIterator[ClientFactory]:
    async with partner_clients(webhooks_app, webhooks_settings) as make:
        yield make


@pytest.fixture
def acme(client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for("acme", ("webhooks:manage",))


# --- a real HTTP receiver on 127.0.0.1 -------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def payload(self, secret: str) -> dict[str, Any]:
        """The body, once its signature verified with `secret` (the standardwebhooks verifier)."""
        verified: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return verified


Answer = Callable[[Received], Response | None]


@dataclass
class Receiver:
    """Records every request; `answers[path]` decides the answer (200 when absent), and may sleep (it runs in the
    server's own thread and event loop)."""

    url: str
    received: list[Received] = field(default_factory=list)
    answers: dict[str, Callable[[Received], Any]] = field(default_factory=dict)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, *, timeout_s: float = 15.0) -> list[Received]:
        async def arrived() -> bool:
            return len(self.at(path)) >= count

        await wait_until(arrived, timeout_s=timeout_s, what=f"{count} requests to {path}")
        return self.at(path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    async def handle(request: Request) -> Response:
        got = Received(request.url.path, dict(request.headers), await request.body())
        state.received.append(got)
        answer = state.answers.get(request.url.path)
        result = answer(got) if answer else None
        if asyncio.iscoroutine(result):
            result = await result
        return result if isinstance(result, Response) else Response("ok", status_code=200)

    app = Starlette(routes=[Route("/{path:path}", handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    server.should_exit = True
    thread.join(5)


async def create_endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["order.status_changed"], **fields}
    response = await client.post("/v1/webhooks/endpoints", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- platform events on the real broker -----------------------------------------------------------------------------

NAMES = {"new": "New", "paid": "Paid", "shipped": "Shipped", "delivered": "Delivered"}
TYPES = {"new": "general", "shipped": "delivery", "delivered": "delivery", "paid": "payment"}


def status_changed(
    order_id: str = "o-1", sequence: int = 1, *, to: str = "shipped", partner: str = "acme"
) -> Envelope[OrderStatusChanged]:
    status_type = StatusType(TYPES[to])
    order = OrderSnapshot(
        order_id=order_id,
        statuses=CurrentStatuses.model_validate({str(status_type): {"code": to, "name": NAMES[to]}}),
        amount=Decimal("1990.00"),
        currency="RUB",
        customer=Customer(id="c-1", phone="+7 916 123-45-67"),
        placed_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    data = OrderStatusChanged(
        order_id=order_id,
        status_type=status_type,
        from_status=None,
        to_status=StatusRef(code=to, name=NAMES[to]),
        to_include_in_analytics=True,
        sequence=sequence,
        order=order,
        occurred_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )
    return Envelope.wrap(data, source="/services/orders", partner_id=partner)


def sms_failed(order_id: str = "o-1", *, partner: str = "acme") -> Envelope[SmsFailed]:
    data = SmsFailed(
        message_id=f"m-{uuid.uuid4().hex[:8]}", send_sms_id=str(uuid.uuid4()), partner_id=partner,
        campaign_id="cmp-1", order_id=order_id, phone="+79161234567", occurred_at=datetime.now(UTC),
        reason="opted_out", message="the number opted out", attempts=0,
    )  # fmt: skip
    return Envelope.wrap(data, source="/services/notifier", partner_id=partner)


@pytest.fixture
async def publish(producer: AIOKafkaProducer, webhooks_settings: WebhooksSettings) -> Callable[..., Awaitable[None]]:
    async def send(*envelopes: Envelope[Any]) -> None:
        for envelope in envelopes:
            topic = webhooks_settings.topic(envelope.topic)
            await producer.send_and_wait(topic, envelope.to_bytes(), key=envelope.key())

    return send


async def message_log(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's delivery log, oldest message first."""
    response = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}/messages", params={"limit": 200})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))


async def attempts_recorded(client: httpx.AsyncClient, endpoint_id: str, count: int) -> None:
    """Wait until the endpoint's attempts are all recorded. Move the test's clock only then: moved while an attempt is
    in flight, it would expire that attempt's lease."""

    async def done() -> bool:
        return sum(len(m["attempts"]) for m in await message_log(client, endpoint_id)) >= count

    await wait_until(done, what=f"{count} attempts recorded")
