"""Many runs waiting cost the live path and the timers nothing: with 100,000 runs waiting for later (and 20,000
finished), the timers' claim, their look at the earliest due time and the consumer's probe of a batch's orders each
read a handful of index pages (EXPLAIN ANALYZE), never the table; and a pause never deadlocks with a batch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI

from campaigns.repository import CLAIM_DUE_RUNS_SQL, EARLIEST_DUE_SQL, OPEN_RUNS_OF_ORDERS_SQL, hold_runs
from campaigns.settings import CampaignsSettings

from .conftest import Clock

WAITING, FINISHED = 100_000, 20_000


@pytest.fixture
async def db(campaigns_app: FastAPI, campaigns_settings: CampaignsSettings) -> Any:
    conn = await asyncpg.connect(campaigns_settings.database_url)
    await conn.execute(
        "INSERT INTO campaign_versions (campaign_id, version, definition, saved_at) VALUES ('c-1', 1, '{}', now())"
    )
    await conn.execute(
        "INSERT INTO journey_runs (campaign_id, order_id, run, partner_id, customer_id, version, step, state, due_at, "
        "sequence, change, entered_at, updated_at) "
        "SELECT 'c-1', 'o-' || i, 1, 'demo', 'c-' || i, 1, CASE WHEN i <= $1 THEN 0 ELSE 6 END, "
        "CASE WHEN i <= $1 THEN 'waiting' ELSE 'done' END, "
        "CASE WHEN i <= $1 THEN now() + make_interval(days => 1, secs => i) END, 2, "
        '\'{"order_id": "o", "note": "a snapshot of a realistic size, a few hundred bytes"}\', now(), now() '
        "FROM generate_series(1, $2) AS i",
        WAITING,
        WAITING + FINISHED,
    )
    await conn.execute("ANALYZE journey_runs")
    yield conn
    await conn.close()


async def plan(conn: asyncpg.Connection, sql: str, *args: Any) -> dict[str, Any]:
    async with conn.transaction():
        found = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    top: dict[str, Any] = json.loads(found)[0]["Plan"]
    return top


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def pages(top: dict[str, Any]) -> int:
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def assert_index_only_walk(top: dict[str, Any]) -> None:
    scans = [n for n in nodes(top) if n.get("Relation Name") == "journey_runs"]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), [n["Node Type"] for n in scans]
    assert pages(top) < 40, f"{pages(top)} pages read"


async def test_the_claim_and_the_consumers_probe_read_a_few_pages_whatever_waits(
    db: asyncpg.Connection, clock: Clock
) -> None:
    assert_index_only_walk(await plan(db, CLAIM_DUE_RUNS_SQL, clock.now, 200))  # nothing due yet
    assert_index_only_walk(await plan(db, EARLIEST_DUE_SQL))
    batch = [("demo", f"o-{n}") for n in range(WAITING + 1, WAITING + 501)]  # 500 orders, finished runs only
    probe = await plan(db, OPEN_RUNS_OF_ORDERS_SQL, [p for p, _ in batch], [o for _, o in batch])
    scans = [n for n in nodes(probe) if n.get("Relation Name") == "journey_runs"]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), [n["Node Type"] for n in scans]
    assert pages(probe) < 2_000, f"{pages(probe)} pages read for 500 orders"  # a few per order, not the table's


async def test_a_pause_and_a_batch_sharing_runs_wait_for_each_other_and_never_deadlock(
    campaigns_app: FastAPI, campaigns_settings: CampaignsSettings, clock: Clock
) -> None:
    """The consumer locks an order's runs in (campaign, order, run) order; a pause locks its campaign's runs in the
    same order, so it waits behind the consumer's first run instead of taking a later one first."""
    consumer = await asyncpg.connect(campaigns_settings.database_url)
    pausing = await asyncpg.connect(campaigns_settings.database_url)
    try:
        for order in ("o-2", "o-1"):  # stored in this order: a scan of the table meets o-2 first
            await consumer.execute(
                "INSERT INTO journey_runs (campaign_id, order_id, run, partner_id, customer_id, version, step, state, "
                "due_at, sequence, change, entered_at, updated_at) "
                "VALUES ('c-1', $1, 1, 'demo', 'c', 1, 0, 'waiting', $2, 1, '{}', $2, $2)",
                order,
                clock.now,
            )
        lock = "SELECT 1 FROM journey_runs WHERE order_id = $1 FOR UPDATE"
        async with consumer.transaction():
            await consumer.execute(lock, "o-1")  # the consumer's batch has locked o-1 and goes on to o-2

            async def pause() -> None:
                async with pausing.transaction():
                    await hold_runs(pausing, "c-1", clock.now)

            paused = asyncio.create_task(pause())
            await asyncio.sleep(0.5)  # the pause is waiting now
            await asyncio.wait_for(consumer.execute(lock, "o-2"), 0.5)  # not held by the pause
        await asyncio.wait_for(paused, 5)
        states = await consumer.fetch("SELECT state FROM journey_runs WHERE campaign_id = 'c-1'")
        assert [r["state"] for r in states] == ["held", "held"]
    finally:
        await consumer.close()
        await pausing.close()
