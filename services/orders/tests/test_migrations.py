"""The orders migrations on data stored before them, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from servicekit.db import apply_migrations

MIGRATIONS = Path(__file__).parents[1] / "src" / "orders" / "migrations"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PROCESSED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # when orders applied the statuses: weeks late


async def test_current_statuses_get_their_upstream_time_from_the_history(database: str, tmp_path: Path) -> None:
    """1004 keeps `since` as recorded_at and takes entered_at from the newest applied history row of the status
    (not the watermark, which a repeat moved on), else from the watermark."""
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        if migration.name < "1004":
            shutil.copy(migration, tmp_path)
    await asyncio.to_thread(apply_migrations, database, tmp_path)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO orders (partner_id, order_id, customer_id, amount, currency, placed_at) "
            "VALUES ('demo', 'o-1', 'c-1', 10, 'RUB', $1)",
            T0,
        )
        history = [  # general: accepted, then agreed one hour later, repeated at +3h (the watermark moved)
            ("general", "applied", "accepted", T0),
            ("general", "applied", "agreed", T0 + timedelta(hours=1)),
            ("general", "unchanged", "agreed", T0 + timedelta(hours=3)),
        ]
        await conn.executemany(
            "INSERT INTO status_history (partner_id, order_id, type, outcome, to_code, to_name, occurred_at, "
            "event_id) VALUES ('demo', 'o-1', $1, $2, $3, $3, $4, 'e')",
            history,
        )
        await conn.executemany(
            "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, since) "
            "VALUES ('demo', 'o-1', $1, $2, $2, $3, $4)",
            [("general", "agreed", T0 + timedelta(hours=3), PROCESSED), ("payment", "paid", T0, PROCESSED)],
        )
        await asyncio.to_thread(apply_migrations, database, MIGRATIONS)
        rows = await conn.fetch("SELECT type, entered_at, recorded_at, occurred_at FROM order_statuses ORDER BY type")
        assert [tuple(r) for r in rows] == [
            ("general", T0 + timedelta(hours=1), PROCESSED, T0 + timedelta(hours=3)),
            ("payment", T0, PROCESSED, T0),  # no history row: the watermark's time
        ]
        order = await conn.fetchrow("SELECT details_occurred_at, details_source_sequence FROM orders")
        assert order is not None and tuple(order) == (None, None)  # not known: the next upsert applies
    finally:
        await conn.close()
