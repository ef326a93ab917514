"""The campaign index follows the database through a lost listener: the service is not ready and the consumer
waits while it may be stale, and the keeper recovers by itself (listen again, reload everything)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

import campaigns.services
from campaigns.domain import CampaignIndex, CampaignState
from campaigns.listener import Listening
from campaigns.services import Campaigns, IndexKeeper
from campaigns.settings import CampaignsSettings
from contracts.envelope import Envelope
from contracts.topics import Topic
from devtools.pytest_plugin import wait_until
from devtools.scenario import DEMO_PARTNER
from servicekit.app import parts_of

Activate = Callable[..., Awaitable[str]]
MakeChange = Callable[..., Envelope[Any]]


async def _listener_pid(pool: asyncpg.Pool) -> int | None:
    async with pool.acquire() as conn:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%campaigns%'"
        )
        return pid


async def _terminate(pool: asyncpg.Pool, pid: int) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)


class Gate:
    """Holds the keeper's next attempts to listen until opened: the listener stays down meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()
        original = Listening.open

        async def gated(pool: asyncpg.Pool, *callbacks: Any) -> Listening:
            self.waiting.set()
            await self.opened.wait()
            return await original(pool, *callbacks)

        monkeypatch.setattr(Listening, "open", staticmethod(gated))


@pytest.fixture
async def other_instance(campaigns_app: FastAPI, campaigns_settings: CampaignsSettings, clock: Any) -> Campaigns:
    """Campaign writes of another instance: they reach this one only through the database notification."""
    runtime = campaigns_app.state.runtime
    return Campaigns(
        runtime.pool,
        DEMO_PARTNER,
        runtime.catalog,
        CampaignIndex(),
        clock,
        campaigns_settings.topic(Topic.CAMPAIGN_STATUS_USAGE),
    )


@pytest.fixture
async def listener_down(campaigns_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gate]:
    """The listening connection terminated, and the keeper held from listening again until `opened` is set."""
    pool = campaigns_app.state.runtime.pool
    pid = await _listener_pid(pool)
    assert pid is not None
    gate = Gate(monkeypatch)
    await _terminate(pool, pid)
    await asyncio.wait_for(gate.waiting.wait(), 20)
    yield gate
    gate.opened.set()


async def _ready(app: FastAPI) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://campaigns") as client:
        body: dict[str, Any] = (await client.get("/readyz")).json()
        return body


async def test_a_terminated_listener_makes_the_service_not_ready_until_the_keeper_listens_again(
    campaigns_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = campaigns_app.state.runtime.pool
    assert (await _ready(campaigns_app))["checks"]["campaign_index"] is True
    before = await _listener_pid(pool)
    assert before is not None
    gate = Gate(monkeypatch)
    await _terminate(pool, before)
    await asyncio.wait_for(gate.waiting.wait(), 20)
    assert (await _ready(campaigns_app))["checks"]["campaign_index"] is False
    gate.opened.set()

    async def listening_again() -> bool:
        return (await _ready(campaigns_app))["checks"]["campaign_index"] is True

    await wait_until(listening_again, what="the keeper to listen again")
    after = await _listener_pid(pool)
    assert after not in (None, before)


async def test_a_campaign_activated_while_the_listener_was_down_fires_after_it_recovered(
    demo: httpx.AsyncClient,
    seed_campaign: dict[str, Any],
    other_instance: Campaigns,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    listener_down: Gate,
) -> None:
    created = await demo.post("/v1/campaigns", json=seed_campaign)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    await other_instance.set_state(campaign_id, CampaignState.ACTIVE)  # its notification is lost
    await topics.publish(make_change())
    await asyncio.sleep(1.0)  # the consumer holds the change back: its index may be stale
    assert await topics.send_sms() == []

    listener_down.opened.set()
    (sms,) = await topics.wait_for_send_sms(1)
    assert sms.data.campaign_id == campaign_id


async def test_a_campaign_paused_while_the_listener_was_down_sends_nothing(
    active_campaign: Activate,
    other_instance: Campaigns,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    listener_down: Gate,
) -> None:
    campaign_id = await active_campaign()
    await other_instance.set_state(campaign_id, CampaignState.PAUSED)  # its notification is lost
    await topics.publish(make_change())
    listener_down.opened.set()
    await topics.consumed_all()
    assert await topics.send_sms() == []
    assert parts_of(campaigns_app.state.runtime, IndexKeeper).index.matching(DEMO_PARTNER, "delivery", "shipped") == []


async def test_a_reload_that_fails_is_retried_by_reloading_everything(
    demo: httpx.AsyncClient,
    seed_campaign: dict[str, Any],
    other_instance: Campaigns,
    campaigns_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await demo.post("/v1/campaigns", json=seed_campaign)
    assert created.status_code == 201, created.text
    failures = 0

    async def unreachable(*_: Any) -> None:
        nonlocal failures
        failures += 1
        raise ConnectionResetError("the database went away for a moment")

    monkeypatch.setattr(campaigns.services, "campaign_by_id", unreachable)  # the one-campaign reload fails
    await other_instance.set_state(created.json()["id"], CampaignState.ACTIVE)
    index = parts_of(campaigns_app.state.runtime, IndexKeeper).index

    async def indexed() -> bool:
        return failures > 0 and len(index.matching(DEMO_PARTNER, "delivery", "shipped")) == 1

    await wait_until(indexed, what="the whole index to be reloaded after the failed reload")
    assert (await _ready(campaigns_app))["checks"]["campaign_index"] is True
