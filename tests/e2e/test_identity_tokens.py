"""An integrator's API client on the running platform: its OAuth2 token (signed by identity, verified by every
service with identity's JWKS) works on every service within its scopes, and is refused everywhere within a second
of the client's revocation."""

from __future__ import annotations

import asyncio
import time

import httpx

from devtools.platform import Platform

SCOPES = ["statuses:read", "orders:read", "orders:write", "campaigns:read", "messages:read"]
READS = {
    "status-registry": "/v1/statuses",
    "orders": "/v1/orders",
    "campaigns": "/v1/campaigns",
    "notifier": "/v1/messages",
}


async def _token(platform: Platform, client_id: str, secret: str) -> str:
    async with httpx.AsyncClient(base_url=platform.url("identity"), timeout=10) as identity:
        answer = await identity.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


async def _status_everywhere(platform: Platform, token: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"}
    statuses = {}
    for service, path in READS.items():
        async with httpx.AsyncClient(base_url=platform.url(service), headers=headers, timeout=10) as client:
            statuses[service] = (await client.get(path)).status_code
    return statuses


async def test_an_api_clients_token_works_within_its_scopes_everywhere_until_revoked(platform: Platform) -> None:
    async with platform.client("identity", "acme") as admin:
        created = await admin.post("/v1/clients", json={"name": "ERP", "scopes": SCOPES})
        assert created.status_code == 201, created.text
        client_id, secret = created.json()["client_id"], created.json()["client_secret"]
        token = await _token(platform, client_id, secret)

        assert await _status_everywhere(platform, token) == dict.fromkeys(READS, 200)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=platform.url("status-registry"), headers=headers) as registry:
            refused = await registry.post(
                "/v1/statuses", json={"code": "x", "name": "X", "type": "general", "include_in_analytics": False}
            )
        assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
        assert refused.json()["scope"] == "statuses:write", refused.text
        async with httpx.AsyncClient(base_url=platform.url("identity"), headers=headers) as identity:
            assert (await identity.get("/v1/clients")).status_code == 403  # clients:manage is not among its scopes

        revoked = await admin.post(f"/v1/clients/{client_id}/revoke")
        assert revoked.status_code == 200, revoked.text
    began = time.monotonic()
    while (found := await _status_everywhere(platform, token)) != dict.fromkeys(READS, 401):
        assert time.monotonic() - began < 1.0, f"still answered {found} a second after the revocation"
        await asyncio.sleep(0.05)
