"""Retention of REST idempotency keys against real PostgreSQL: keys older than the retention go, recent ones
stay and still answer a repeated request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import orders
from orders.repository import retention_purges, stored_response
from orders.settings import OrdersSettings
from servicekit.db import apply_migrations, create_pool
from servicekit.retention import Retention

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEEP = timedelta(hours=OrdersSettings().idempotency_key_retention_hours)  # the documented default, 48 h


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database, Path(orders.__file__).parent / "migrations")
    pool = await create_pool(database)
    yield pool
    await pool.close()


async def key(pool: asyncpg.Pool, name: str, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO idempotency_keys (partner_id, key, request_hash, status_code, body, created_at) "
        "VALUES ('acme', $1, 'hash', 200, '{}', $2)",
        name,
        NOW - age,
    )


async def test_keys_older_than_the_retention_go_and_recent_ones_still_answer(pool: asyncpg.Pool) -> None:
    for n in range(5):
        await key(pool, f"old-{n}", KEEP + timedelta(minutes=1))
    await key(pool, "recent", KEEP - timedelta(minutes=1))
    retention = Retention(pool, retention_purges(KEEP), interval_s=3600, batch_size=2, pause_s=0, lock_timeout_ms=200)

    removed = await retention.run_once(NOW)

    assert removed == {"idempotency_keys": 5}
    assert [r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")] == ["recent"]
    async with pool.acquire() as conn:
        assert await stored_response(conn, "acme", "recent") is not None
