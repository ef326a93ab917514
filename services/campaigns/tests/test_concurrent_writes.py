"""Every write endpoint of the campaigns service, 20 requests at once on one resource (docs/concurrency.md).

Each test asserts the endpoint's rule: no 5xx; one winner per version and the documented refusal for the rest, or
idempotent successes; and the records on `campaigns.status-usage.v1` equal the final state: one record per version,
versions consecutive from 1, the last one what a read returns (and the in-memory index agrees).

One service instance (one database, one topic namespace) serves the whole module; each test writes its own
campaigns (and its own partner's settings), so the tests do not see each other's writes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from campaigns.app import create_app
from campaigns.services import IndexKeeper
from campaigns.settings import CampaignsSettings
from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import Envelope, decode
from contracts.status_events import StatusDefinitionUpserted
from contracts.statuses import StatusDefinition, StatusType
from contracts.topics import Topic
from devtools.concurrency import at_once, codes, statuses
from devtools.pytest_plugin import (
    ClientFactory,
    Infrastructure,
    partner_clients,
    read_topic,
    wait_until,
)
from devtools.scenario import DEMO_PARTNER, example_status_list
from servicekit.app import parts_of
from servicekit.outbox import idempotent_producer

N = 20

CAMPAIGN: dict[str, Any] = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "Заказ {{ order.id }} {{ to_status.name }}",
    "sender": "DemoShop",
}

PREVIEW_ORDER: dict[str, Any] = {
    "order_id": "o-42",
    "amount": "1990.00",
    "currency": "RUB",
    "customer": {"id": "c-1", "phone": "8 (916) 123-45-67", "name": "Anna", "sms_consent": True},
    "statuses": {"general": "accepted", "payment": "paid"},
}

# --- one service for the module ------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaigns_settings(
    infrastructure: Infrastructure, module_database: str, module_topic_prefix: str
) -> CampaignsSettings:
    return CampaignsSettings(
        database_url=module_database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=module_topic_prefix,
        outbox_poll_interval_s=0.2,
        consumer_group=f"{module_topic_prefix}campaigns",
        sms_events_consumer_group=f"{module_topic_prefix}campaigns.sms-events",
    )


async def _publish_demo_statuses(settings: CampaignsSettings) -> None:
    """The example statuses of the demo partner on the registry topic, as the registry would publish them."""
    producer = idempotent_producer(settings.kafka_bootstrap_servers, "campaigns-tests")
    await producer.start()
    try:
        now = datetime.now(UTC)
        for fields in example_status_list():
            definition = StatusDefinition(partner_id=DEMO_PARTNER, version=1, created_at=now, updated_at=now, **fields)
            envelope = Envelope.wrap(StatusDefinitionUpserted(definition=definition), source="/t", partner_id="demo")
            await producer.send_and_wait(settings.topic(Topic.STATUS_DEFINITIONS), envelope.to_bytes(), envelope.key())
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
async def campaigns_app(campaigns_settings: CampaignsSettings) -> AsyncIterator[FastAPI]:
    await _publish_demo_statuses(campaigns_settings)
    app = create_app(campaigns_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def client_for(campaigns_app: FastAPI, campaigns_settings: CampaignsSettings) -> AsyncIterator[ClientFactory]:
    async with partner_clients(campaigns_app, campaigns_settings) as make:
        yield make


@pytest.fixture
def demo(client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for(DEMO_PARTNER)


# --- helpers -------------------------------------------------------------------------------------


async def create(client: httpx.AsyncClient, **changes: Any) -> str:
    created = await client.post("/v1/campaigns", json=CAMPAIGN | changes)
    assert created.status_code == 201, created.text
    campaign_id: str = created.json()["id"]
    return campaign_id


async def usage_records(settings: CampaignsSettings, campaign_ids: set[str]) -> dict[str, list[CampaignStatusUsage]]:
    """Each campaign's status-usage records, in the order published (one key, one partition)."""
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic(Topic.CAMPAIGN_STATUS_USAGE))
    found: dict[str, list[CampaignStatusUsage]] = {}
    for record in records:
        usage = decode(record.value or b"", CampaignStatusUsage).data
        if usage.campaign_id in campaign_ids:
            found.setdefault(usage.campaign_id, []).append(usage)
    return found


async def assert_events_equal_state(
    campaigns_app: FastAPI, client: httpx.AsyncClient, settings: CampaignsSettings, *campaign_ids: str
) -> None:
    """For each campaign: one record per version, versions 1, 2, 3..., the last one the campaign as read now; and
    the index holds it exactly when it is active."""
    current = {c: (await client.get(f"/v1/campaigns/{c}")).json() for c in campaign_ids}
    found: dict[str, list[CampaignStatusUsage]] = {}

    async def arrived() -> bool:
        nonlocal found
        found = await usage_records(settings, set(campaign_ids))
        return all(len(found.get(c, [])) >= current[c]["version"] for c in campaign_ids)

    await wait_until(arrived, what="every version's status-usage record")
    await asyncio.sleep(0.3)  # anything published twice would be there by now
    found = await usage_records(settings, set(campaign_ids))
    index = parts_of(campaigns_app.state.runtime, IndexKeeper).index
    for campaign_id, campaign in current.items():
        usages = found[campaign_id]
        assert [u.version for u in usages] == list(range(1, campaign["version"] + 1)), campaign_id
        last = usages[-1]
        assert (last.name, last.active) == (campaign["name"], campaign["state"] == "active"), campaign_id
        indexed = [c.id for c in index.matching(campaign["partner_id"], StatusType.DELIVERY, "shipped")]
        assert (campaign_id in indexed) == (campaign["state"] == "active"), campaign_id


# --- POST /v1/campaigns --------------------------------------------------------------------------


async def test_creates_each_create_one_campaign(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    """A create is not idempotent (no key): twenty creates are twenty drafts, each with its one record."""
    responses = await at_once(*(demo.post("/v1/campaigns", json=CAMPAIGN) for _ in range(N)))

    assert statuses(responses) == {201: N}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == N and {r.json()["version"] for r in responses} == {1}
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, *ids)


# --- PUT /v1/campaigns/{id} ----------------------------------------------------------------------


async def test_replaces_at_one_version_one_wins_the_rest_412(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    campaign_id = await create(demo)
    responses = await at_once(
        *(
            demo.put(f"/v1/campaigns/{campaign_id}", json=CAMPAIGN | {"name": f"Name {i}"}, headers={"If-Match": '"1"'})
            for i in range(N)
        )
    )

    assert statuses(responses) == {200: 1, 412: N - 1}
    assert codes(responses, 412) == {"version_mismatch": N - 1}
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


async def test_replaces_without_if_match_apply_one_after_another(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    """Without If-Match the last write wins, and every write that changes the definition is its own version."""
    campaign_id = await create(demo)
    responses = await at_once(
        *(demo.put(f"/v1/campaigns/{campaign_id}", json=CAMPAIGN | {"name": f"Name {i}"}) for i in range(N))
    )

    assert statuses(responses) == {200: N}
    assert sorted(r.json()["version"] for r in responses) == list(range(2, N + 2))
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


async def test_identical_replaces_change_it_once(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    campaign_id = await create(demo)
    responses = await at_once(
        *(demo.put(f"/v1/campaigns/{campaign_id}", json=CAMPAIGN | {"name": "Renamed"}) for _ in range(N))
    )

    assert statuses(responses) == {200: N}
    assert {r.json()["version"] for r in responses} == {2}
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


# --- activate, pause, archive --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "action", "state"),
    [
        ([], "activate", "active"),
        (["activate"], "pause", "paused"),
        (["activate"], "archive", "archived"),
    ],
)
async def test_state_changes_are_idempotent(
    campaigns_app: FastAPI,
    demo: httpx.AsyncClient,
    campaigns_settings: CampaignsSettings,
    before: list[str],
    action: str,
    state: str,
) -> None:
    campaign_id = await create(demo)
    for step in before:
        assert (await demo.post(f"/v1/campaigns/{campaign_id}/{step}")).status_code == 200
    path = f"/v1/campaigns/{campaign_id}"

    def send() -> Awaitable[httpx.Response]:
        return demo.delete(path) if action == "archive" else demo.post(f"{path}/{action}")

    responses = await at_once(*(send() for _ in range(N)))

    assert statuses(responses) == {200: N}
    assert {(r.json()["state"], r.json()["version"]) for r in responses} == {(state, len(before) + 2)}
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


async def test_activates_and_pauses_at_once_apply_one_after_another(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    """Activate and pause interleaved: each applies to the state the previous one left (a change of state is a
    version, asking for the current state changes nothing), and the index ends as the last one left it."""
    campaign_id = await create(demo)
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
    responses = await at_once(
        *(demo.post(f"/v1/campaigns/{campaign_id}/{('pause', 'activate')[i % 2]}") for i in range(N))
    )

    assert statuses(responses) == {200: N}
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


async def test_an_archive_racing_activates_and_edits_ends_them(
    campaigns_app: FastAPI, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    """Once archived, a campaign is never active or edited again: what comes after the archive is 409
    `invalid_state`, an activate or an edit alike."""
    campaign_id = await create(demo)
    path = f"/v1/campaigns/{campaign_id}"
    activates = [demo.post(f"{path}/activate") for _ in range(N // 2)]
    edits = [demo.put(path, json=CAMPAIGN | {"name": f"Name {i}"}) for i in range(N // 2)]
    responses = await at_once(*activates, demo.delete(path), *edits)

    assert set(statuses(responses)) <= {200, 409}
    assert set(codes(responses, 409)) <= {"invalid_state"}
    assert (await demo.get(path)).json()["state"] == "archived"
    await assert_events_equal_state(campaigns_app, demo, campaigns_settings, campaign_id)


# --- PUT /v1/settings ----------------------------------------------------------------------------


async def test_settings_last_write_wins_whole(client_for: ClientFactory) -> None:
    """Partner settings have no version: every put applies whole, and the last one applied is what a read returns
    (never a mix of two bodies). They publish nothing."""
    client = client_for(f"p-{uuid.uuid4().hex[:8]}")
    bodies = [
        {"quiet_hours": {"start": f"{8 + i % 4:02d}:00:00", "end": "21:00:00"}, "frequency_cap": None}
        if i % 2
        else {"quiet_hours": None, "frequency_cap": {"max_messages": i + 1, "window_hours": 24}}
        for i in range(N)
    ]
    responses = await at_once(*(client.put("/v1/settings", json=body) for body in bodies))

    assert statuses(responses) == {200: N}
    assert (await client.get("/v1/settings")).json() in [r.json() for r in responses]


# --- the previews (POST, but they write nothing) -------------------------------------------------


async def test_previews_at_once_all_answer_and_write_nothing(demo: httpx.AsyncClient) -> None:
    campaign_id = await create(demo)
    change = {"from": "at_pickup_point", "to": "shipped", "order": PREVIEW_ORDER}
    saved = [demo.post(f"/v1/campaigns/{campaign_id}/preview", json=change) for _ in range(N // 2)]
    drafts = [demo.post("/v1/campaigns/preview", json=change | {"definition": CAMPAIGN}) for _ in range(N // 2)]
    responses = await at_once(*saved, *drafts)

    assert statuses(responses) == {200: N}
    assert {r.json()["outcome"] for r in responses} == {"fired"}
    assert (await demo.get(f"/v1/campaigns/{campaign_id}")).json()["version"] == 1
