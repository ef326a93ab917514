from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
