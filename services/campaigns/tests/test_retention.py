"""Retention of evaluations and SMS outcomes against real PostgreSQL: what can no longer matter goes, what backs
the frequency cap and "once per order" stays, and the stats count what went."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import campaigns
from campaigns.repository import (
    UNFIRED_EVALUATIONS_SQL,
    CampaignRepository,
    fired_for_orders,
    recent_marketing_sms,
    retention_purges,
)
from campaigns.settings import CampaignsSettings
from servicekit.db import apply_migrations, create_pool
from servicekit.retention import Retention

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SETTINGS = CampaignsSettings()  # the documented defaults: 90 days, fired 400 days, outcomes 90 days


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database, Path(campaigns.__file__).parent / "migrations")
    pool = await create_pool(database)
    yield pool
    await pool.close()


def clean_up(pool: asyncpg.Pool, batch_size: int = 1000) -> Retention:
    purges = retention_purges(
        timedelta(days=SETTINGS.evaluation_retention_days),
        timedelta(days=SETTINGS.fired_evaluation_retention_days),
        timedelta(days=SETTINGS.sms_outcome_retention_days),
    )
    return Retention(pool, purges, interval_s=3600, batch_size=batch_size, pause_s=0, lock_timeout_ms=200)


async def evaluation(
    pool: asyncpg.Pool, event_id: str, outcome: str, age: timedelta, *, order: str = "o-1", reason: str = ""
) -> None:
    reasons = [{"code": reason, "detail": ""}] if reason else []
    await pool.execute(
        "INSERT INTO evaluations (campaign_id, event_id, partner_id, order_id, customer_id, outcome, reasons, "
        "evaluated_at) VALUES ('c-1', $1, 'acme', $2, 'cust-1', $3, $4, $5)",
        event_id,
        order,
        outcome,
        json.dumps(reasons),
        NOW - age,
    )


async def sms_outcome(pool: asyncpg.Pool, send_sms_id: str, kind: str, age: timedelta, reason: str | None) -> None:
    await pool.execute(
        "INSERT INTO sms_outcomes (send_sms_id, kind, partner_id, campaign_id, reason, occurred_at) "
        "VALUES ($1, $2, 'acme', 'c-1', $3, $4)",
        send_sms_id,
        kind,
        reason,
        NOW - age,
    )


async def event_ids(pool: asyncpg.Pool) -> set[str]:
    return {row["event_id"] for row in await pool.fetch("SELECT event_id FROM evaluations")}


async def stats(pool: asyncpg.Pool) -> tuple[object, ...]:
    async with pool.acquire() as conn:
        s = (await CampaignRepository(conn, "acme").stats(["c-1"]))["c-1"]
    return (s.outcomes, s.filtered_out_by_reason, s.sms, s.failed_by_reason)


async def test_old_evaluations_go_but_fired_ones_that_still_count_stay(pool: asyncpg.Pool) -> None:
    await evaluation(pool, "old-filtered", "filtered_out", 91 * DAY, order="o-2", reason="payment_status")
    await evaluation(pool, "old-capped", "capped", 91 * DAY, order="o-3", reason="frequency_cap")
    await evaluation(pool, "recent-filtered", "filtered_out", 89 * DAY, order="o-4", reason="payment_status")
    await evaluation(pool, "fired-in-cap-window", "fired", 2 * DAY, order="o-5")
    await evaluation(pool, "fired-last-quarter", "fired", 100 * DAY, order="o-1")  # once per order still holds
    await evaluation(pool, "fired-long-ago", "fired", 401 * DAY, order="o-6")

    removed = await clean_up(pool).run_once(NOW)

    assert removed == {"evaluations": 2, "fired evaluations": 1, "sms_outcomes": 0, "finished journey runs": 0}
    assert await event_ids(pool) == {"recent-filtered", "fired-in-cap-window", "fired-last-quarter"}
    async with pool.acquire() as conn:
        fired = await fired_for_orders(conn, [("c-1", "o-1"), ("c-1", "o-6")])
        in_window = await recent_marketing_sms(conn, {("acme", "cust-1"): NOW - 31 * DAY})
    assert fired == {("c-1", "o-1")}  # the order that fired 100 days ago gets no second SMS
    assert in_window == {("acme", "cust-1"): 1}  # the frequency cap still counts the SMS of two days ago


async def test_the_stats_still_count_what_the_clean_up_deleted(pool: asyncpg.Pool) -> None:
    for n in range(7):
        await evaluation(pool, f"old-{n}", "filtered_out", 200 * DAY, order=f"o-{n}", reason="payment_status")
    await evaluation(pool, "recent", "filtered_out", DAY, order="o-9", reason="payment_status")
    await evaluation(pool, "fired-old", "fired", 500 * DAY, order="o-10")
    await evaluation(pool, "fired-recent", "fired", DAY, order="o-11")
    await sms_outcome(pool, "s-1", "dispatched", 200 * DAY, None)
    await sms_outcome(pool, "s-1", "failed", 200 * DAY, "undeliverable")
    await sms_outcome(pool, "s-2", "failed", 200 * DAY, None)
    await sms_outcome(pool, "s-3", "dispatched", DAY, None)
    before = await stats(pool)

    removed = await clean_up(pool, batch_size=3).run_once(NOW)

    assert removed == {"evaluations": 7, "fired evaluations": 1, "sms_outcomes": 3, "finished journey runs": 0}
    assert await event_ids(pool) == {"recent", "fired-recent"}
    assert await stats(pool) == before
    assert before[0] == {"filtered_out": 8, "fired": 2}
    assert before[3] == {"undeliverable": 1, "unknown": 1}


async def test_a_statement_deletes_at_most_one_batch(pool: asyncpg.Pool) -> None:
    for n in range(5):
        await evaluation(pool, f"old-{n}", "filtered_out", 200 * DAY, order=f"o-{n}", reason="payment_status")

    deleted = await pool.fetchval(UNFIRED_EVALUATIONS_SQL, NOW - 90 * DAY, 2)

    assert deleted == 2
    assert len(await event_ids(pool)) == 3


async def test_finished_journey_runs_go_after_the_fired_evaluations_time_and_waiting_ones_never(
    pool: asyncpg.Pool,
) -> None:
    old, recent = NOW - timedelta(days=SETTINGS.fired_evaluation_retention_days) - DAY, NOW - 10 * DAY
    for order, state, updated in [("o-done", "done", old), ("o-left", "left", old), ("o-waiting", "waiting", old),
                                  ("o-held", "held", old), ("o-recent", "done", recent)]:  # fmt: skip
        await pool.execute(
            "INSERT INTO journey_runs (campaign_id, order_id, run, partner_id, customer_id, version, step, state, "
            "due_at, sequence, change, entered_at, updated_at) "
            "VALUES ('c-1', $1, 1, 'acme', 'cust-1', 1, 0, $2, $3, 1, '{}', $3, $3)",
            order,
            state,
            updated,
        )
    removed = await clean_up(pool).run_once(NOW)
    assert removed["finished journey runs"] == 2
    kept = {r["order_id"] for r in await pool.fetch("SELECT order_id FROM journey_runs")}
    assert kept == {"o-waiting", "o-held", "o-recent"}
