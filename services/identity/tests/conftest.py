from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devtools.pytest_plugin import ClientFactory, Infrastructure
from devtools.tokens import IdentityTokens
from identity.app import create_app
from identity.settings import IdentitySettings


@pytest.fixture
def identity_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> IdentitySettings:
    return IdentitySettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
        token_issuer="http://identity",
        key_refresh_s=0.2,
    )


@pytest.fixture
async def identity_app(identity_settings: IdentitySettings) -> AsyncIterator[FastAPI]:
    app = create_app(identity_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client_for(identity_app: FastAPI, identity_settings: IdentitySettings) -> AsyncIterator[ClientFactory]:
    """`client_for("acme")`: an HTTP client of identity holding a token of acme that identity issued to the console
    (its own client; `read`/`write` as in devtools.tokens.scopes_of)."""
    transport = httpx.ASGITransport(app=identity_app)
    tokens = IdentityTokens(identity_settings.token_issuer, transport=transport)
    clients: list[httpx.AsyncClient] = []

    def make(partner: str = "acme", scopes: tuple[str, ...] = ("read", "write")) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=transport, base_url="http://identity", auth=tokens.auth(partner, scopes))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def acme(client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for("acme")


@pytest.fixture
async def anonymous(identity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """No token: the token endpoint's and the JWKS's callers."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=identity_app), base_url="http://identity") as c:
        yield c


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@dataclass
class Integrator:
    """Drives identity as the console (clients) and as an integrator (tokens) would."""

    console: httpx.AsyncClient
    http: httpx.AsyncClient

    async def new_client(self, name: str = "shop", scopes: tuple[str, ...] = ("orders:read",)) -> dict[str, Any]:
        response = await self.console.post("/v1/clients", json={"name": name, "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def token(self, client_id: str, secret: str, **form: str) -> httpx.Response:
        return await self.http.post(
            "/oauth/token", data={"grant_type": "client_credentials", **form}, headers=basic(client_id, secret)
        )


@pytest.fixture
def integrator(acme: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> Integrator:
    return Integrator(console=acme, http=anonymous)
