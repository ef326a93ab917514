"""Endpoints over the API: create (the secret once), read, list, change with If-Match, rotate, delete; one partner
never sees another's; the scope is needed."""

from __future__ import annotations

import httpx

from devtools.pytest_plugin import ClientFactory

from .conftest import create_endpoint


async def test_an_endpoint_is_created_read_changed_and_deleted(acme: httpx.AsyncClient) -> None:
    created = await create_endpoint(
        acme, "https://shop.example/hooks", event_types=["sms.failed", "order.status_changed"], description="Shop"
    )
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["order.status_changed", "sms.failed"]
    assert created["enabled"] is True and created["disabled_reason"] is None and created["disabled_cause"] is None
    endpoint_id = created["id"]

    read = await acme.get(f"/v1/webhooks/endpoints/{endpoint_id}")
    assert read.status_code == 200
    assert "secret" not in read.json()
    assert read.headers["etag"] == '"1"'

    unconditional = await acme.patch(f"/v1/webhooks/endpoints/{endpoint_id}", json={"enabled": False})
    assert unconditional.status_code == 428
    changed = await acme.patch(
        f"/v1/webhooks/endpoints/{endpoint_id}",
        json={"enabled": False, "status_type": "delivery"},
        headers={"If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False and changed.json()["status_type"] == "delivery"
    assert changed.json()["disabled_cause"] == "by_partner" and changed.json()["disabled_reason"] is None
    assert changed.headers["etag"] == '"2"'
    stale = await acme.patch(
        f"/v1/webhooks/endpoints/{endpoint_id}", json={"enabled": True}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "version_mismatch"
    enabled = await acme.patch(
        f"/v1/webhooks/endpoints/{endpoint_id}", json={"enabled": True}, headers={"If-Match": '"2"'}
    )
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_cause"] is None

    listed = await acme.get("/v1/webhooks/endpoints")
    assert [e["id"] for e in listed.json()["items"]] == [endpoint_id]

    assert (await acme.delete(f"/v1/webhooks/endpoints/{endpoint_id}")).status_code == 204
    assert (await acme.get(f"/v1/webhooks/endpoints/{endpoint_id}")).status_code == 404


async def test_partners_see_only_their_endpoints_and_the_scope_is_needed(
    acme: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    endpoint_id = (await create_endpoint(acme, "https://shop.example/hooks"))["id"]
    globex = client_for("globex", ("webhooks:manage",))

    assert (await globex.get(f"/v1/webhooks/endpoints/{endpoint_id}")).status_code == 404
    assert (await globex.get("/v1/webhooks/endpoints")).json()["items"] == []
    patched = await globex.patch(
        f"/v1/webhooks/endpoints/{endpoint_id}", json={"enabled": False}, headers={"If-Match": "*"}
    )
    assert patched.status_code == 404
    assert (await globex.post(f"/v1/webhooks/endpoints/{endpoint_id}/rotate-secret")).status_code == 404
    assert (await globex.get(f"/v1/webhooks/endpoints/{endpoint_id}/messages")).status_code == 404
    assert (await globex.delete(f"/v1/webhooks/endpoints/{endpoint_id}")).status_code == 404

    reader = client_for("acme", ("read",))
    refused = await reader.get("/v1/webhooks/endpoints")
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"


async def test_a_url_that_is_no_http_url_is_refused(acme: httpx.AsyncClient) -> None:
    for url in ("ftp://shop.example/x", "https://user:pw@shop.example/x", "not a url", "https:///path"):
        refused = await acme.post("/v1/webhooks/endpoints", json={"url": url, "event_types": ["sms.failed"]})
        assert refused.status_code == 422, url
        assert refused.json()["errors"][0]["field"] == "url"
    unknown_type = await acme.post(
        "/v1/webhooks/endpoints", json={"url": "https://shop.example/x", "event_types": ["order.deleted"]}
    )
    assert unknown_type.status_code == 422


async def test_readiness_says_the_dispatcher_runs(acme: httpx.AsyncClient) -> None:
    ready = await acme.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["dispatcher"] is True
