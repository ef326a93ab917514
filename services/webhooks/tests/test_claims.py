"""The dispatcher's claim with a dead endpoint's backlog beside a live endpoint (the bench's isolation figure):
the backlog never takes a live endpoint's turn, and the claim's cost does not grow with it.

The messages here are due in the test clock's future, and the claims are made at that future by the test itself:
the app's own dispatcher, which claims at the clock's present, leaves them alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx

from webhooks.repository import CLAIM_SQL, Deliveries, NewMessage
from webhooks.settings import WebhooksSettings

from .conftest import TestClock, create_endpoint

BACKLOG = 100_000


@asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    finally:
        await transaction.rollback()


def message(endpoint_id: str, n: int, due: datetime) -> NewMessage:
    return NewMessage(
        id=f"msg_{endpoint_id}_{n}",
        partner_id="acme",
        endpoint_id=endpoint_id,
        event_id=f"event-{n}",
        event_type="sms.failed",
        order_id=None,
        sequence=None,
        payload="{}",
        next_attempt_at=due,
    )


async def test_a_backlog_of_old_due_messages_never_takes_another_endpoints_turn(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, clock: TestClock
) -> None:
    dead = (await create_endpoint(acme, "https://dead.example/hooks", event_types=["sms.failed"]))["id"]
    live = (await create_endpoint(acme, "https://live.example/hooks", event_types=["sms.failed"]))["id"]
    later = clock.now() + timedelta(hours=1)
    backlog = [message(dead, n, later + timedelta(seconds=n)) for n in range(10)]  # due long before the fresh one
    fresh = message(live, 0, later + timedelta(minutes=30))
    now, lease_until = later + timedelta(hours=1), later + timedelta(hours=2)
    conn = await asyncpg.connect(webhooks_settings.database_url)
    try:
        await Deliveries(conn).insert_messages([*backlog, fresh])
        async with rolled_back(conn):  # each claim below starts from the same messages
            claimed = await Deliveries(conn).claim(now, lease_until, 2, 4, {})
            assert fresh.id in {m.id for m in claimed}, "the dead endpoint's backlog took the whole round"
        # One slot left and the dead endpoint already sending one: the live endpoint, which sends none, comes first.
        async with rolled_back(conn):
            (claimed_one,) = await Deliveries(conn).claim(now, lease_until, 1, 4, {dead: 1})
            assert claimed_one.id == fresh.id
    finally:
        await conn.close()


async def test_the_claim_costs_no_more_with_a_dead_endpoints_100000_messages(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, clock: TestClock
) -> None:
    """With the bench's backlog the claim's estimated cost passes PostgreSQL's JIT thresholds, and compiling it took
    0.7 s of every claim round (for 1.5 ms of execution) while the live endpoints waited: the database runs without
    JIT, whatever the estimate."""
    dead = (await create_endpoint(acme, "https://dead.example/hooks"))["id"]
    await create_endpoint(acme, "https://live.example/hooks")
    later = clock.now() + timedelta(hours=1)
    conn = await asyncpg.connect(webhooks_settings.database_url)  # a new session, as the service's pool opens them
    try:
        await preload_backlog(conn, dead, later)
        plan = await explained_claim(conn, later + timedelta(minutes=1))
        assert "JIT" not in plan, f"the claim was JIT-compiled: {plan['JIT']}"
        assert plan["Plan"]["Actual Rows"] == 4  # the dead endpoint's four slots, nothing else due
    finally:
        await conn.close()


async def test_the_claim_reads_none_of_a_paused_endpoints_messages_then_takes_one_probe(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, clock: TestClock
) -> None:
    """A failing endpoint's 100,000 messages cost the claims nothing while it is paused: the claim filters the
    endpoint before its lateral scan, which is never executed for it; after the pause, one message is its probe."""
    dead = (await create_endpoint(acme, "https://dead.example/hooks"))["id"]
    await create_endpoint(acme, "https://live.example/hooks")
    later = clock.now() + timedelta(hours=1)
    conn = await asyncpg.connect(webhooks_settings.database_url)
    try:
        await preload_backlog(conn, dead, later)
        await conn.execute(
            "UPDATE endpoints SET failing_since = $2, paused_until = $3 WHERE id = $1",
            dead,
            later,
            later + timedelta(minutes=2),
        )
        paused = await explained_claim(conn, later + timedelta(minutes=1))
        assert paused["Plan"]["Actual Rows"] == 0
        assert rows_read(paused["Plan"], "messages") == 0, "the claim read a paused endpoint's messages"
        probe = await explained_claim(conn, later + timedelta(minutes=3))
        assert probe["Plan"]["Actual Rows"] == 1  # the probe: one message, not the endpoint's four slots
    finally:
        await conn.close()


async def preload_backlog(conn: asyncpg.Connection, endpoint_id: str, due: datetime) -> None:
    """As the bench preloads a dead endpoint's backlog: 4 changes per order, the first due, the others held."""
    await conn.execute(
        "INSERT INTO messages (id, partner_id, endpoint_id, event_id, event_type, order_id, sequence, payload, "
        "next_attempt_at) "
        "SELECT 'msg_dead_' || n, 'acme', $2, 'dead-event-' || n, 'order.status_changed', 'dead-' || n / 4, "
        "n % 4 + 1, repeat('x', 800), CASE WHEN n % 4 = 0 THEN $3::timestamptz END "
        "FROM generate_series(0, $1::int - 1) AS n",
        BACKLOG,
        endpoint_id,
        due,
    )
    await conn.execute("ANALYZE messages")


async def explained_claim(conn: asyncpg.Connection, now: datetime) -> dict[str, Any]:
    """The claim at `now` as `EXPLAIN ANALYZE` ran it (rolled back: it leases what it claims), 64 free slots."""
    async with rolled_back(conn):
        explained = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM_SQL}",
            now,
            now + timedelta(minutes=1),
            64,
            4,
            [],
            [],
            "00000000-0000-0000-0000-000000000001",
        )
    (plan,) = json.loads(explained)
    return dict(plan)


def rows_read(node: dict[str, Any], table: str) -> int:
    """The rows the plan's scans of `table` returned, over all their loops (a scan never executed has none)."""
    own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == table else 0
    if node["Node Type"] in ("ModifyTable", "LockRows"):
        own = 0  # the lease's UPDATE and the row locks are counted at the scans beneath them
    return own + sum(rows_read(child, table) for child in node.get("Plans", []))
