"""Scopes: every route of every service names the one scope it needs, its OpenAPI document says so (an OAuth2
client-credentials scheme pointing at the deployment's issuer), and a token's scopes are read as documented."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI

from campaigns.app import create_app as campaigns_app
from campaigns.settings import CampaignsSettings
from contracts.identity import Scope
from identity.app import create_app as identity_app
from identity.settings import IdentitySettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orders.app import create_app as orders_app
from orders.settings import OrdersSettings
from servicekit.auth import SECURITY_SCHEME, Principal
from status_registry.app import create_app as registry_app
from status_registry.settings import RegistrySettings
from webhooks.app import create_app as webhooks_app
from webhooks.settings import WebhooksSettings

ISSUER = "https://id.example"
# Each service's resource: its routes need `<resource>:read` to read and `<resource>:write` to change (identity's and
# webhooks' `<resource>:manage` for all).
APPS: dict[str, tuple[Callable[[], FastAPI], str]] = {
    "status-registry": (lambda: registry_app(RegistrySettings(token_issuer=ISSUER)), "statuses"),
    "orders": (lambda: orders_app(OrdersSettings(token_issuer=ISSUER)), "orders"),
    "campaigns": (lambda: campaigns_app(CampaignsSettings(token_issuer=ISSUER)), "campaigns"),
    "notifier": (lambda: notifier_app(NotifierSettings(token_issuer=ISSUER)), "messages"),
    "identity": (lambda: identity_app(IdentitySettings(token_issuer=ISSUER)), "clients"),
    "webhooks": (lambda: webhooks_app(WebhooksSettings(token_issuer=ISSUER)), "webhooks"),
}
# Routes that take no partner token: probes, the token endpoint and JWKS, the SMS providers' webhooks.
# POSTs that change nothing: the campaign previews and backtests (a body too large for a query) need only the read
# scope (a backtest's token also needs orders:read, checked when it reads the orders' history).
READING_POSTS = {
    ("post", "/v1/campaigns/preview"),
    ("post", "/v1/campaigns/{campaign_id}/preview"),
    ("post", "/v1/campaigns/backtest"),
    ("post", "/v1/campaigns/{campaign_id}/backtest"),
}
OPEN = {
    "/healthz",
    "/readyz",
    "/oauth/token",
    "/.well-known/jwks.json",
    "/v1/delivery-reports/http",
    "/v1/inbound/http",
}


@pytest.mark.parametrize("service", sorted(APPS))
def test_every_operation_names_the_one_scope_it_needs(service: str) -> None:
    make, resource = APPS[service]
    document = make().openapi()
    flow = document["components"]["securitySchemes"][SECURITY_SCHEME]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"{ISSUER}/oauth/token"
    assert set(flow["scopes"]) == {str(s) for s in Scope}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path in OPEN:
                assert not operation.get("security"), f"{method} {path}"
                continue
            ((scheme, scopes),) = [entry for entry in operation["security"] for entry in entry.items()]
            if resource in ("clients", "webhooks"):  # one scope manages all of it
                expected = [f"{resource}:manage"]
            else:
                reads = method == "get" or (method, path) in READING_POSTS
                expected = [f"{resource}:read" if reads else f"{resource}:write"]
            assert (scheme, scopes) == (SECURITY_SCHEME, expected), f"{method} {path}"
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"


def test_a_token_holds_exactly_its_scopes() -> None:
    client = Principal("acme", frozenset({"orders:read", "orders:write"}), client_id="cli_x")
    assert client.allows("orders:read") and client.allows("orders:write")
    assert not client.allows("statuses:read") and not client.allows("clients:manage")
    assert not Principal("acme", frozenset({"read", "write"}), client_id="cli_x").allows("orders:read")  # no shorthand
