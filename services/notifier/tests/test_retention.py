"""Retention of attempts and receipts against real PostgreSQL: old finished ones go, an attempt in flight and
recent rows stay, and so does the message itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import notifier
from notifier.repository import retention_purges
from notifier.settings import NotifierSettings
from servicekit.db import apply_migrations, create_pool
from servicekit.retention import Retention

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SETTINGS = NotifierSettings()  # the documented defaults: 90 days each


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database, Path(notifier.__file__).parent / "migrations")
    pool = await create_pool(database)
    yield pool
    await pool.close()


def clean_up(pool: asyncpg.Pool) -> Retention:
    purges = retention_purges(
        timedelta(days=SETTINGS.attempt_retention_days), timedelta(days=SETTINGS.receipt_retention_days)
    )
    return Retention(pool, purges, interval_s=3600, batch_size=2, pause_s=0, lock_timeout_ms=200)


async def message(pool: asyncpg.Pool, age: timedelta) -> uuid.UUID:
    message_id = uuid.uuid4()
    requested = NOW - age
    await pool.execute(
        "INSERT INTO messages (message_id, partner_id, send_sms_id, campaign_id, order_id, customer_id, phone, "
        "text, encoding, segments, status, requested_at, expires_at, command) "
        "VALUES ($1, 'acme', $2, 'c-1', 'o-1', 'cust-1', '+79161234567', 'hi', 'gsm7', 1, 'dispatched', $3, $4, '')",
        message_id,
        str(message_id),
        requested,
        requested + DAY,
    )
    return message_id


async def attempt(pool: asyncpg.Pool, message_id: uuid.UUID, n: int, age: timedelta, *, finished: bool) -> None:
    started = NOW - age
    await pool.execute(
        "INSERT INTO attempts (message_id, attempt, provider, status, started_at, finished_at) "
        "VALUES ($1, $2, 'console', $3, $4, $5)",
        message_id,
        n,
        "accepted" if finished else "in_flight",
        started,
        started if finished else None,
    )


async def receipt(pool: asyncpg.Pool, provider_message_id: str, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO receipts (provider, provider_message_id, segment, status, raw_status, received_at, updated_at) "
        "VALUES ('console', $1, 0, 'delivered', 'DELIVRD', $2, $2)",
        provider_message_id,
        NOW - age,
    )


async def test_old_finished_attempts_and_receipts_go_the_rest_stays(pool: asyncpg.Pool) -> None:
    old, recent = await message(pool, 120 * DAY), await message(pool, DAY)
    for n in range(1, 4):
        await attempt(pool, old, n, 120 * DAY, finished=True)
    await attempt(pool, old, 4, 120 * DAY, finished=False)  # in flight (orphaned): reconciliation needs it
    await attempt(pool, recent, 1, DAY, finished=True)
    for n in range(3):
        await receipt(pool, f"old-{n}", 91 * DAY)
    await receipt(pool, "recent", 89 * DAY)

    removed = await clean_up(pool).run_once(NOW)

    assert removed == {"attempts": 3, "receipts": 3}  # in batches of two
    attempts = await pool.fetch("SELECT message_id, attempt FROM attempts ORDER BY started_at, attempt")
    assert [(r["message_id"], r["attempt"]) for r in attempts] == [(old, 4), (recent, 1)]
    assert [r["provider_message_id"] for r in await pool.fetch("SELECT provider_message_id FROM receipts")] == [
        "recent"
    ]
    assert await pool.fetchval("SELECT count(*) FROM messages") == 2
