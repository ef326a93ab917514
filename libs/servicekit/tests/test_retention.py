"""The retention clean-up against real PostgreSQL: old rows go in bounded batches, recent ones stay, the hot path
is never waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from devtools.pytest_plugin import Infrastructure, wait_until
from servicekit import retention as retention_module
from servicekit.app import ServiceSpec, create_service_app
from servicekit.db import apply_migrations, create_pool
from servicekit.retention import PROCESSED_EVENTS_SQL, Purge, Retention, processed_events_purge
from servicekit.settings import ServiceSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database)
    pool = await create_pool(database)
    yield pool
    await pool.close()


async def claims(pool: asyncpg.Pool, consumer: str, count: int, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO processed_events (consumer, event_id, processed_at) "
        "SELECT $1, $1 || '-' || n, $2 FROM generate_series(1, $3) AS n",
        consumer,
        NOW - age,
        count,
    )


async def remaining(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT consumer, count(*) AS n FROM processed_events GROUP BY consumer")
    return {row["consumer"]: row["n"] for row in rows}


def retention(pool: asyncpg.Pool, purges: list[Purge], *, batch_size: int = 1000) -> Retention:
    return Retention(pool, purges, interval_s=3600, batch_size=batch_size, pause_s=0, lock_timeout_ms=200)


async def test_claims_older_than_the_retention_go_and_recent_ones_stay(pool: asyncpg.Pool) -> None:
    await claims(pool, "old", 25, WEEK + timedelta(minutes=1))
    await claims(pool, "recent", 10, WEEK - timedelta(minutes=1))

    removed = await retention(pool, [processed_events_purge(WEEK)], batch_size=10).run_once(NOW)

    assert removed == {"processed_events": 25}  # in three batches: 10, 10, 5
    assert await remaining(pool) == {"recent": 10}


async def test_one_statement_deletes_at_most_one_batch(pool: asyncpg.Pool) -> None:
    await claims(pool, "old", 25, timedelta(days=30))

    deleted = await pool.fetchval(PROCESSED_EVENTS_SQL, NOW - WEEK, 10)

    assert deleted == 10
    assert await remaining(pool) == {"old": 15}


async def test_rows_the_hot_path_holds_are_skipped_not_waited_for(pool: asyncpg.Pool) -> None:
    await claims(pool, "old", 5, timedelta(days=30))
    async with pool.acquire() as hot, hot.transaction():
        await hot.execute("SELECT 1 FROM processed_events WHERE event_id = 'old-1' FOR UPDATE")
        removed = await asyncio.wait_for(retention(pool, [processed_events_purge(WEEK)]).run_once(NOW), 10)
    assert removed == {"processed_events": 4}
    assert await pool.fetchval("SELECT event_id FROM processed_events") == "old-1"


async def test_a_locked_table_makes_the_clean_up_give_way_within_its_lock_timeout(pool: asyncpg.Pool) -> None:
    await claims(pool, "old", 5, timedelta(days=30))
    started = time.monotonic()
    async with pool.acquire() as migration, migration.transaction():
        await migration.execute("LOCK TABLE processed_events IN ACCESS EXCLUSIVE MODE")
        removed = await asyncio.wait_for(retention(pool, [processed_events_purge(WEEK)]).run_once(NOW), 10)
    assert removed == {}  # skipped this round, not queued behind the lock (and in front of everyone else)
    assert time.monotonic() - started < 5
    assert await remaining(pool) == {"old": 5}


async def test_every_service_runs_the_clean_up_in_the_background_and_stops_it_with_the_service(
    pool: asyncpg.Pool, database: str, infrastructure: Infrastructure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "FIRST_RUN_DELAY_S", 0.0)
    await claims(pool, "old", 3, timedelta(days=30))
    await claims(pool, "recent", 2, timedelta(0))
    settings = ServiceSettings(database_url=database, kafka_bootstrap_servers=infrastructure.kafka_bootstrap)
    app = create_service_app(settings, ServiceSpec(title="t", description="t", migrations=tmp_path))

    async with app.router.lifespan_context(app):

        async def cleaned() -> bool:
            return await remaining(pool) == {"recent": 2}

        await wait_until(cleaned, timeout_s=30, what="the old claims deleted by the service's clean-up")
        assert [t for t in asyncio.all_tasks() if t.get_name() == "retention"]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "retention"]
