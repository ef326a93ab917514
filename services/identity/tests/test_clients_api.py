"""/v1/clients: a partner's API clients, their secrets shown once, rotation, revocation (with its event), audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from contracts.envelope import Envelope
from contracts.identity import ApiClientRevoked
from contracts.topics import Topic
from devtools.pytest_plugin import ClientFactory, read_topic
from identity.settings import IdentitySettings


async def test_a_client_is_created_with_a_secret_shown_once_and_stored_as_an_argon2_hash(
    integrator: Any, acme: httpx.AsyncClient, database: str
) -> None:
    created = await integrator.new_client("Shop backend", ("orders:write", "orders:read"))

    assert created["client_id"].startswith("cli_")
    assert created["client_secret"].startswith("cs_") and len(created["client_secret"]) >= 40
    assert created["scopes"] == ["orders:read", "orders:write"]
    assert created["state"] == "active" and created["created_by"] == "partner:acme"
    read = (await acme.get(f"/v1/clients/{created['client_id']}")).json()
    assert "client_secret" not in read
    assert read["name"] == "Shop backend"
    conn = await asyncpg.connect(database)
    try:
        stored = await conn.fetch("SELECT secret_hash FROM client_secrets")
    finally:
        await conn.close()
    assert [row["secret_hash"][:10] for row in stored] == ["$argon2id$"]
    assert created["client_secret"] not in stored[0]["secret_hash"]


async def test_creation_is_refused_for_an_unknown_scope_a_past_expiry_or_a_taken_name(
    integrator: Any, acme: httpx.AsyncClient
) -> None:
    unknown = await acme.post("/v1/clients", json={"name": "x", "scopes": ["orders:delete"]})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"].startswith("scopes")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = await acme.post("/v1/clients", json={"name": "x", "scopes": ["orders:read"], "expires_at": past})
    assert expired.status_code == 422
    assert expired.json()["errors"][0]["field"] == "expires_at"
    await integrator.new_client("Shop")
    taken = await acme.post("/v1/clients", json={"name": "shop", "scopes": ["orders:read"]})
    assert taken.status_code == 409
    assert taken.json()["code"] == "client_name_taken"


async def test_clients_are_listed_per_partner_and_another_partners_client_is_not_found(
    integrator: Any, acme: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    first = await integrator.new_client("one")
    second = await integrator.new_client("two")
    other = client_for("globex")
    theirs = await other.post("/v1/clients", json={"name": "one", "scopes": ["orders:read"]})
    assert theirs.status_code == 201  # names are per partner

    page = (await acme.get("/v1/clients", params={"limit": 1})).json()
    assert [c["client_id"] for c in page["items"]] == [first["client_id"]]
    rest = (await acme.get("/v1/clients", params={"cursor": page["next_cursor"]})).json()
    assert [c["client_id"] for c in rest["items"]] == [second["client_id"]]
    assert rest["next_cursor"] is None
    assert (await other.get(f"/v1/clients/{first['client_id']}")).status_code == 404
    assert (await other.post(f"/v1/clients/{first['client_id']}/revoke")).status_code == 404
    assert (await other.post(f"/v1/clients/{first['client_id']}/rotate-secret")).status_code == 404
    assert (await other.get(f"/v1/clients/{first['client_id']}/audit")).status_code == 404


async def test_managing_clients_needs_clients_manage(client_for: ClientFactory) -> None:
    """An HS256 partner token's `write` holds it (the console's, until it gets identity's tokens); `read` does not:
    the list shows who may reach the partner's data, which is the managers' business."""
    assert (await client_for("acme", ("write",)).get("/v1/clients")).status_code == 200
    reader = client_for("acme", ("read",))
    for refused in (await reader.get("/v1/clients"), await reader.post("/v1/clients", json={"name": "x"})):
        assert refused.status_code == 403
        assert (refused.json()["code"], refused.json()["scope"]) == ("insufficient_scope", "clients:manage")


async def test_revoking_publishes_one_event_and_is_final(
    integrator: Any, acme: httpx.AsyncClient, identity_settings: IdentitySettings
) -> None:
    created = await integrator.new_client()
    client_id = created["client_id"]

    revoked = await acme.post(f"/v1/clients/{client_id}/revoke", headers={"X-Actor": "anna@acme.example"})
    again = await acme.post(f"/v1/clients/{client_id}/revoke")

    assert revoked.status_code == again.status_code == 200
    assert revoked.json()["state"] == "revoked" and revoked.json()["revoked_by"] == "anna@acme.example"
    assert again.json() == revoked.json()
    rotate = await acme.post(f"/v1/clients/{client_id}/rotate-secret")
    assert rotate.status_code == 409
    assert rotate.json()["code"] == "client_revoked"
    # The answer came once the broker had the event: it is on the topic already.
    topic = identity_settings.topic(Topic.CLIENT_REVOCATIONS)
    records = await read_topic(identity_settings.kafka_bootstrap_servers, topic)
    assert len(records) == 1
    assert records[0].key == f"acme:{client_id}".encode()
    event = Envelope[ApiClientRevoked].from_bytes(records[0].value).data
    assert (event.partner_id, event.client_id) == ("acme", client_id)
    # A revoked client's name may name a new client.
    assert (await acme.post("/v1/clients", json={"name": "shop", "scopes": ["orders:read"]})).status_code == 201


async def test_the_audit_says_who_created_rotated_and_revoked_what_and_when(
    integrator: Any, acme: httpx.AsyncClient
) -> None:
    created = await integrator.new_client("audited", ("statuses:read",))
    client_id = created["client_id"]
    rotated = await acme.post(
        f"/v1/clients/{client_id}/rotate-secret", json={"grace_period_s": 60}, headers={"X-Actor": "boris"}
    )
    assert rotated.status_code == 200
    await acme.post(f"/v1/clients/{client_id}/revoke", headers={"X-Actor": "anna"})

    audit = (await acme.get(f"/v1/clients/{client_id}/audit")).json()
    assert [(e["action"], e["actor"]) for e in audit["items"]] == [
        ("created", "partner:acme"),
        ("secret_rotated", "boris"),
        ("revoked", "anna"),
    ]
    assert audit["items"][0]["details"]["scopes"] == ["statuses:read"]
    assert audit["items"][1]["details"] == {"grace_period_s": 60}
    page = (await acme.get(f"/v1/clients/{client_id}/audit", params={"limit": 2})).json()
    assert len(page["items"]) == 2
    rest = (await acme.get(f"/v1/clients/{client_id}/audit", params={"cursor": page["next_cursor"]})).json()
    assert [e["action"] for e in rest["items"]] == ["revoked"]


async def test_an_actor_header_with_control_characters_is_refused(integrator: Any, acme: httpx.AsyncClient) -> None:
    created = await integrator.new_client()
    response = await acme.post(f"/v1/clients/{created['client_id']}/revoke", headers={"X-Actor": "a\tb"})
    assert response.status_code == 422
