"""Every write endpoint of the registry, 20 requests at once on one resource (docs/concurrency.md).

Each test asserts the endpoint's rule: no 5xx; one winner per version and the documented refusal for the rest, or
idempotent successes; and the records on `registry.status-definitions.v1` equal the final state: one record per
version, versions consecutive from 1, the last one the definition a read returns.

One service instance (one database, one topic namespace) serves the whole module; each test writes its own
partner's catalog, so the tests do not see each other's statuses.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.envelope import decode_any
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from devtools.concurrency import at_once, codes, statuses
from devtools.pytest_plugin import (
    ClientFactory,
    Infrastructure,
    partner_clients,
    read_topic,
    wait_until,
)
from status_registry.app import create_app
from status_registry.settings import RegistrySettings

N = 20

# --- one service for the module ------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_settings(
    infrastructure: Infrastructure, module_database: str, module_topic_prefix: str
) -> RegistrySettings:
    return RegistrySettings(
        database_url=module_database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=module_topic_prefix,
        outbox_poll_interval_s=0.2,
        consumer_group=f"status-registry-{module_topic_prefix}",
    )


@pytest.fixture(scope="module")
async def client_for(registry_settings: RegistrySettings) -> AsyncIterator[ClientFactory]:
    app: FastAPI = create_app(registry_settings)
    async with app.router.lifespan_context(app), partner_clients(app, registry_settings) as make:
        yield make


def partner() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


# --- helpers -------------------------------------------------------------------------------------


def status(code: str, type_: str = "delivery", **extra: Any) -> dict[str, Any]:
    return {"code": code, "name": code.replace("_", " ").title(), "type": type_, **extra}


async def events_of(
    settings: RegistrySettings, partner_id: str, expected: dict[str, int]
) -> dict[str, list[dict[str, Any]]]:
    """Each code's published definitions (by key `partner:code`), once `expected` (code -> records) are all there;
    asserts no other code of the partner has any."""
    prefix = f"{partner_id}:".encode()
    found: dict[str, list[dict[str, Any]]] = {}

    async def arrived() -> bool:
        nonlocal found
        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_definitions)
        found = {}
        for record in records:  # one key, one partition: in the order published
            if record.key is None or not record.key.startswith(prefix):
                continue
            envelope = decode_any(record.value or b"", (StatusDefinitionUpserted, StatusDefinitionArchived))
            assert isinstance(envelope.data, StatusDefinitionUpserted | StatusDefinitionArchived)
            definition = envelope.data.definition.model_dump(mode="json")
            found.setdefault(definition["code"], []).append(definition)
        return all(len(found.get(code, [])) >= count for code, count in expected.items())

    await wait_until(arrived, what=f"{partner_id}'s status records {expected}")
    await asyncio.sleep(0.3)  # anything published twice would be there by now
    await arrived()
    assert {code: len(definitions) for code, definitions in found.items()} == expected
    return found


async def assert_events_equal_state(
    client: httpx.AsyncClient, settings: RegistrySettings, partner_id: str, expected: dict[str, int]
) -> None:
    """One record per version of each code, versions 1, 2, 3..., the last one what the registry holds now."""
    found = await events_of(settings, partner_id, expected)
    for code, definitions in found.items():
        assert [d["version"] for d in definitions] == list(range(1, len(definitions) + 1)), code
        current = (await client.get(f"/v1/statuses/{code}")).json()
        assert definitions[-1] == current, code


# --- POST /v1/statuses ---------------------------------------------------------------------------


async def test_creates_of_one_code_one_wins_the_rest_status_exists(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    who = partner()
    client = client_for(who)
    responses = await at_once(*(client.post("/v1/statuses", json=status("shipped", name=f"n{i}")) for i in range(N)))

    assert statuses(responses) == {201: 1, 409: N - 1}
    assert codes(responses, 409) == {"status_exists": N - 1}
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 1})


async def test_creates_of_initial_statuses_of_one_type_one_wins(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Twenty different codes, each the initial status of one type: only one type's initial can exist."""
    who = partner()
    client = client_for(who)
    responses = await at_once(
        *(client.post("/v1/statuses", json=status(f"first_{i}", is_initial=True)) for i in range(N))
    )

    assert statuses(responses) == {201: 1, 409: N - 1}
    assert codes(responses, 409) == {"initial_status_taken": N - 1}
    (winner,) = [r.json()["code"] for r in responses if r.status_code == 201]
    await assert_events_equal_state(client, registry_settings, who, {winner: 1})


async def test_creates_naming_a_status_being_archived_all_apply(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Creates whose `allowed_next` names a status archived at the same moment: an archived code stays a known code
    of its type (it can be restored), so every create applies, before or after the archive."""
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("delivered"))).status_code == 201
    creates = [client.post("/v1/statuses", json=status(f"s_{i}", allowed_next=["delivered"])) for i in range(N)]
    responses = await at_once(*creates, client.delete("/v1/statuses/delivered"))

    assert statuses(responses) == {201: N, 200: 1}
    assert (await client.get("/v1/statuses/delivered")).json()["archived"] is True
    created = dict.fromkeys((f"s_{i}" for i in range(N)), 1)
    await assert_events_equal_state(client, registry_settings, who, {"delivered": 2} | created)


# --- PATCH /v1/statuses/{code} -------------------------------------------------------------------


async def test_patches_of_one_version_one_wins_the_rest_412(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("shipped"))).status_code == 201
    responses = await at_once(
        *(
            client.patch("/v1/statuses/shipped", json={"name": f"Name {i}"}, headers={"If-Match": '"1"'})
            for i in range(N)
        )
    )

    assert statuses(responses) == {200: 1, 412: N - 1}
    assert codes(responses, 412) == {"version_mismatch": N - 1}
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 2})


async def test_patches_each_at_the_version_it_read_apply_one_after_another(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Clients that read, patch with the ETag they read, and on 412 read again: every change lands exactly once."""
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("shipped"))).status_code == 201

    async def patch_until_applied(i: int) -> httpx.Response:
        while True:
            etag = (await client.get("/v1/statuses/shipped")).headers["ETag"]
            answer = await client.patch("/v1/statuses/shipped", json={"name": f"Name {i}"}, headers={"If-Match": etag})
            if answer.status_code != 412:
                return answer

    responses = await at_once(*(patch_until_applied(i) for i in range(N)))

    assert statuses(responses) == {200: N}
    assert sorted(r.json()["version"] for r in responses) == list(range(2, N + 2))
    await assert_events_equal_state(client, registry_settings, who, {"shipped": N + 1})


# --- DELETE /v1/statuses/{code} and POST /v1/statuses/{code}/restore -----------------------------


async def test_archives_are_idempotent(client_for: ClientFactory, registry_settings: RegistrySettings) -> None:
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("shipped"))).status_code == 201
    responses = await at_once(*(client.delete("/v1/statuses/shipped") for _ in range(N)))

    assert statuses(responses) == {200: N}
    assert {(r.json()["archived"], r.json()["version"]) for r in responses} == {(True, 2)}
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 2})


async def test_archives_at_one_version_one_wins_the_rest_412(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("shipped"))).status_code == 201
    responses = await at_once(*(client.delete("/v1/statuses/shipped", headers={"If-Match": '"1"'}) for _ in range(N)))

    assert statuses(responses) == {200: 1, 412: N - 1}
    assert codes(responses, 412) == {"version_mismatch": N - 1}
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 2})


async def test_restores_are_idempotent(client_for: ClientFactory, registry_settings: RegistrySettings) -> None:
    who = partner()
    client = client_for(who)
    assert (await client.post("/v1/statuses", json=status("shipped"))).status_code == 201
    assert (await client.delete("/v1/statuses/shipped")).status_code == 200
    responses = await at_once(*(client.post("/v1/statuses/shipped/restore") for _ in range(N)))

    assert statuses(responses) == {200: N}
    assert {(r.json()["archived"], r.json()["version"]) for r in responses} == {(False, 3)}
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 3})


async def test_restores_of_two_initial_statuses_of_one_type_one_wins(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Two archived initial statuses of one type restored at once: only one may be the live initial status."""
    who = partner()
    client = client_for(who)
    for code in ("first_a", "first_b"):
        assert (await client.post("/v1/statuses", json=status(code, is_initial=True))).status_code == 201
        assert (await client.delete(f"/v1/statuses/{code}")).status_code == 200
    responses = await at_once(*(client.post(f"/v1/statuses/first_{'ab'[i % 2]}/restore") for i in range(N)))

    assert set(statuses(responses)) == {200, 409}
    assert codes(responses, 409) == {"initial_status_taken": statuses(responses)[409]}
    restored = {r.json()["code"] for r in responses if r.status_code == 200}
    assert len(restored) == 1
    (winner,) = restored
    loser = ({"first_a", "first_b"} - restored).pop()
    await assert_events_equal_state(client, registry_settings, who, {winner: 3, loser: 2})


# --- PUT /v1/statuses (bulk sync) ----------------------------------------------------------------


async def test_identical_syncs_are_idempotent(client_for: ClientFactory, registry_settings: RegistrySettings) -> None:
    """The same full list twenty times at once, on an empty catalog: it is created once, the rest change nothing."""
    who = partner()
    client = client_for(who)
    body = {"statuses": [status("accepted", "general", is_initial=True), status("shipped"), status("paid", "payment")]}
    responses = await at_once(*(client.put("/v1/statuses", json=body) for _ in range(N)))

    assert statuses(responses) == {200: N}
    created = [r.json()["created"] for r in responses if r.json()["created"]]
    assert created == [["accepted", "shipped", "paid"]]
    assert sum(1 for r in responses if len(r.json()["unchanged"]) == 3) == N - 1
    await assert_events_equal_state(client, registry_settings, who, {"accepted": 1, "shipped": 1, "paid": 1})


async def test_different_syncs_apply_whole_one_after_another(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Two lists alternating: each sync applies whole against the list the previous one left, and the last
    applied is the catalog; every status's records are its versions, in order."""
    who = partner()
    client = client_for(who)
    lists = (
        [status("accepted", "general", is_initial=True), status("shipped", name="Shipped")],
        [status("accepted", "general", is_initial=True), status("shipped", name="On its way"), status("lost")],
    )
    responses = await at_once(*(client.put("/v1/statuses", json={"statuses": lists[i % 2]}) for i in range(N)))

    assert statuses(responses) == {200: N}
    final = {s["code"]: s for s in (await client.get("/v1/statuses")).json()["items"]}
    assert any({s["code"]: s for s in r.json()["statuses"]} == final for r in responses)
    shipped = (await client.get("/v1/statuses/shipped")).json()["version"]
    lost = (await client.get("/v1/statuses/lost")).json()["version"]
    await assert_events_equal_state(client, registry_settings, who, {"accepted": 1, "shipped": shipped, "lost": lost})


async def test_a_sync_and_creates_of_its_codes_never_collide(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Single creates of a code a concurrent sync also creates: one of them creates it, the others see it."""
    who = partner()
    client = client_for(who)
    body = {"statuses": [status("shipped"), status("delivered")]}
    creates = [client.post("/v1/statuses", json=status("shipped")) for _ in range(N // 2)]
    responses = await at_once(*creates, *(client.put("/v1/statuses", json=body) for _ in range(N // 2)))

    assert set(statuses(responses)) <= {200, 201, 409}
    assert set(codes(responses, 409)) <= {"status_exists"}
    assert statuses(responses)[201] <= 1
    await assert_events_equal_state(client, registry_settings, who, {"shipped": 1, "delivered": 1})


# --- PUT /v1/statuses/order/{type} ---------------------------------------------------------------


async def test_identical_reorders_are_idempotent(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    who = partner()
    client = client_for(who)
    for code, position in (("shipped", 10), ("at_pickup", 20), ("delivered", 30)):
        assert (await client.post("/v1/statuses", json=status(code, position=position))).status_code == 201
    order = {"codes": ["delivered", "shipped", "at_pickup"]}
    responses = await at_once(*(client.put("/v1/statuses/order/delivery", json=order) for _ in range(N)))

    assert statuses(responses) == {200: N}
    assert {tuple((s["code"], s["position"]) for s in r.json()["statuses"]) for r in responses} == {
        (("delivered", 10), ("shipped", 20), ("at_pickup", 30))
    }
    await assert_events_equal_state(client, registry_settings, who, {"delivered": 2, "shipped": 2, "at_pickup": 2})


async def test_reorders_racing_an_add_apply_whole_or_answer_status_list_changed(
    client_for: ClientFactory, registry_settings: RegistrySettings
) -> None:
    """Different orders at once, and a new status of the type among them: each order applies whole against the list
    it names, or is refused with 409 `status_list_changed` once the list has a status it does not name."""
    who = partner()
    client = client_for(who)
    for code, position in (("shipped", 10), ("at_pickup", 20), ("delivered", 30)):
        assert (await client.post("/v1/statuses", json=status(code, position=position))).status_code == 201
    orders = (["delivered", "shipped", "at_pickup"], ["shipped", "at_pickup", "delivered"])
    reorders = [client.put("/v1/statuses/order/delivery", json={"codes": orders[i % 2]}) for i in range(N)]
    responses = await at_once(*reorders, client.post("/v1/statuses", json=status("lost", position=5)))

    assert set(statuses(responses)) <= {200, 201, 409}
    assert set(codes(responses, 409)) <= {"status_list_changed"}
    listed = (await client.get("/v1/statuses", params={"type": "delivery"})).json()["items"]
    positions = [s["position"] for s in listed if s["code"] != "lost"]
    assert sorted(positions) == [10, 20, 30], listed  # the last order applied is whole
    versions = {s["code"]: s["version"] for s in listed}
    await assert_events_equal_state(client, registry_settings, who, versions)
