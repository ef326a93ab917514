from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from devtools.pytest_plugin import Infrastructure
from servicekit.auth import issue_token
from status_registry.app import create_app
from status_registry.settings import RegistrySettings


@pytest.fixture
def registry_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> RegistrySettings:
    return RegistrySettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
    )


@pytest.fixture
async def registry_app(registry_settings: RegistrySettings) -> AsyncIterator[FastAPI]:
    app = create_app(registry_settings)
    async with app.router.lifespan_context(app):
        yield app


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(registry_app: FastAPI, registry_settings: RegistrySettings) -> AsyncIterator[Client]:
    """`client_for("acme")`: an HTTP client holding a token of partner acme (scopes as given)."""
    clients: list[httpx.AsyncClient] = []

    def make(partner: str, scopes: tuple[str, ...] = ("read", "write")) -> httpx.AsyncClient:
        token = issue_token(registry_settings, partner, scopes)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=registry_app),
            base_url="http://registry",
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def acme(client_for: Client) -> httpx.AsyncClient:
    return client_for("acme")
