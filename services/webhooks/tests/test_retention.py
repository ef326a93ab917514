"""Retention of the delivery log against real PostgreSQL: finished messages older than the retention go with their
attempts; recent ones and pending ones (however old) stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import webhooks
from servicekit.db import apply_migrations, create_pool
from servicekit.retention import Retention
from webhooks.repository import retention_purges
from webhooks.settings import WebhooksSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEEP = timedelta(days=WebhooksSettings().message_retention_days)


async def test_old_finished_messages_go_with_their_attempts(database: str) -> None:
    await asyncio.to_thread(apply_migrations, database, Path(webhooks.__file__).parent / "migrations")
    pool = await create_pool(database)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO endpoints (id, partner_id, url, event_types) VALUES ('ep', 'acme', 'https://x', '{}')"
            )
            for name, state, finished in (
                ("old-done", "succeeded", NOW - KEEP - timedelta(hours=1)),
                ("old-failed", "failed", NOW - KEEP - timedelta(hours=1)),
                ("recent", "succeeded", NOW - KEEP + timedelta(hours=1)),
                ("pending", "pending", None),
            ):
                await conn.execute(
                    "INSERT INTO messages (id, partner_id, endpoint_id, event_id, event_type, payload, state, "
                    "next_attempt_at, finished_at, created_at) "
                    "VALUES ($1, 'acme', 'ep', $1, 'sms.failed', '{}', $2, $3, $4, $3)",
                    name, state, NOW - KEEP * 2, finished,
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO attempts (message_id, attempted_at, latency_ms) VALUES ($1, $2, 5)", name, NOW - KEEP
                )
        removed = await Retention(
            pool, retention_purges(KEEP), interval_s=3600, batch_size=1, pause_s=0, lock_timeout_ms=200
        ).run_once(NOW)
        assert removed == {"messages": 2}
        async with pool.acquire() as conn:
            assert {r["id"] for r in await conn.fetch("SELECT id FROM messages")} == {"recent", "pending"}
            attempts = await conn.fetch("SELECT message_id FROM attempts")
            assert {r["message_id"] for r in attempts} == {"recent", "pending"}
    finally:
        await pool.close()
