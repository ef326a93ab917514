from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from devtools.pytest_plugin import ClientFactory, Infrastructure, partner_clients
from status_registry.app import create_app
from status_registry.settings import RegistrySettings


@pytest.fixture
def registry_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> RegistrySettings:
    return RegistrySettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
        consumer_group=f"status-registry-{topic_prefix}",  # a group per test: no waiting for a previous test's members
    )


@pytest.fixture
async def registry_app(registry_settings: RegistrySettings) -> AsyncIterator[FastAPI]:
    app = create_app(registry_settings)
    async with app.router.lifespan_context(app):
        yield app


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(registry_app: FastAPI, registry_settings: RegistrySettings) -> AsyncIterator[ClientFactory]:
    """`client_for("acme")`: an HTTP client holding a token of partner acme (scopes as given)."""
    async with partner_clients(registry_app, registry_settings) as make:
        yield make


@pytest.fixture
def acme(client_for: Client) -> httpx.AsyncClient:
    return client_for("acme")
