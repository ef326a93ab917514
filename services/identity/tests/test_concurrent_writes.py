"""Every write route of identity under 20 requests at once: no 5xx, and the rule each states holds."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from contracts.topics import Topic
from devtools.pytest_plugin import read_topic
from identity.settings import IdentitySettings

AT_ONCE = 20


async def test_creates_of_one_name_at_once_make_one_client(acme: httpx.AsyncClient, database: str) -> None:
    body = {"name": "Shop", "scopes": ["orders:read"]}
    answers = await asyncio.gather(*(acme.post("/v1/clients", json=body) for _ in range(AT_ONCE)))

    assert sorted(a.status_code for a in answers) == [201] + [409] * (AT_ONCE - 1)
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"client_name_taken"}
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_clients") == 1
        assert await conn.fetchval("SELECT count(*) FROM client_secrets") == 1
        assert await conn.fetchval("SELECT count(*) FROM client_audit") == 1
    finally:
        await conn.close()


async def test_creates_of_different_names_at_once_all_succeed(acme: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(
        *(acme.post("/v1/clients", json={"name": f"c{i}", "scopes": ["orders:read"]}) for i in range(AT_ONCE))
    )
    assert [a.status_code for a in answers] == [201] * AT_ONCE
    assert len({a.json()["client_id"] for a in answers}) == AT_ONCE


async def test_rotations_at_once_leave_two_working_secrets_the_last_and_the_one_before(
    integrator: Any, acme: httpx.AsyncClient, database: str
) -> None:
    client = await integrator.new_client()
    cid = client["client_id"]

    answers = await asyncio.gather(
        *(acme.post(f"/v1/clients/{cid}/rotate-secret", json={"grace_period_s": 3600}) for _ in range(AT_ONCE))
    )

    assert [a.status_code for a in answers] == [200] * AT_ONCE
    by_version = sorted((a.json()["version"], a.json()["client_secret"]) for a in answers)
    assert [version for version, _ in by_version] == list(range(2, AT_ONCE + 2))  # one after another
    working = [secret for _, secret in by_version if (await integrator.token(cid, secret)).status_code == 200]
    assert working == [secret for _, secret in by_version[-2:]]
    assert (await integrator.token(cid, client["client_secret"])).status_code == 401
    conn = await asyncpg.connect(database)
    try:
        audit = await conn.fetchval("SELECT count(*) FROM client_audit WHERE action = 'secret_rotated'")
    finally:
        await conn.close()
    assert audit == AT_ONCE


async def test_revocations_at_once_revoke_once_with_one_event_and_one_audit_entry(
    integrator: Any, acme: httpx.AsyncClient, database: str, identity_settings: IdentitySettings
) -> None:
    client = await integrator.new_client()
    cid = client["client_id"]

    answers = await asyncio.gather(*(acme.post(f"/v1/clients/{cid}/revoke") for _ in range(AT_ONCE)))

    assert [a.status_code for a in answers] == [200] * AT_ONCE
    assert len({a.json()["revoked_at"] for a in answers}) == 1
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM client_audit WHERE action = 'revoked'") == 1
    finally:
        await conn.close()
    records = await read_topic(
        identity_settings.kafka_bootstrap_servers, identity_settings.topic(Topic.CLIENT_REVOCATIONS)
    )
    assert len(records) == 1


async def test_rotations_racing_a_revocation_leave_no_working_secret(integrator: Any, acme: httpx.AsyncClient) -> None:
    client = await integrator.new_client()
    cid = client["client_id"]
    requests = [acme.post(f"/v1/clients/{cid}/rotate-secret") for _ in range(AT_ONCE // 2)]
    requests.insert(AT_ONCE // 4, acme.post(f"/v1/clients/{cid}/revoke"))

    answers = await asyncio.gather(*requests)

    assert all(a.status_code in (200, 409) for a in answers)
    assert {a.json()["code"] for a in answers if a.status_code == 409} <= {"client_revoked"}
    secrets = [a.json()["client_secret"] for a in answers if "client_secret" in a.json()]
    for secret in [client["client_secret"], *secrets]:
        assert (await integrator.token(cid, secret)).status_code == 401
