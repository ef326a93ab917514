"""Retention: per-event bookkeeping rows deleted once they can no longer matter, off the hot path.

Idempotency claims, idempotency keys, evaluations, attempts... are written once per event and would grow
forever. Each service lists its `Purge` rules (the SQL lives in its repository module; the shared
`processed_events` rule is here), and `Retention.run` (started by `servicekit.app`) applies them every
`retention_interval_s`:

* in small batches: each DELETE removes at most `retention_batch_size` rows, picked by ctid with
  `FOR UPDATE SKIP LOCKED` (a row the hot path holds is left for the next round), in its own short transaction;
* with a short `lock_timeout`, so a purge gives way instead of queueing behind (and in front of) the hot path;
* sleeping `retention_pause_s` between batches, so autovacuum and the services' own queries keep up;
* logging what it removed and counting it in `retention_deleted_rows_total{rule}`.

A rule's SQL takes `$1`, the cut-off (rows older than it may go), and `$2`, the batch size, deletes at most
`$2` rows and returns how many (see `batch_delete`; a rule may do more with the deleted rows, e.g. count them
into a roll-up, in the same statement). A failed round is logged and retried at the next interval: nothing
here can affect the service's correctness, only how much disk it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter

log = logging.getLogger(__name__)

DELETED_ROWS = Counter("retention_deleted_rows_total", "Rows removed by the retention clean-up", ["rule"])
# Out of the way of start-up (migrations, catalog catch-up, consumers joining) and of short-lived instances such as
# tests' (some run on a fixed clock months in the past).
FIRST_RUN_DELAY_S = 600.0


@dataclass(frozen=True)
class Purge:
    """One retention rule: `sql` deletes at most `$2` rows older than `$1` (= now - `keep`) and returns how many.

    `name` (the table, or which of its rows) labels the logs and the metric.
    """

    name: str
    keep: timedelta
    sql: str


def batch_delete(table: str, condition: str, returning: str = "1") -> str:
    """A DELETE of at most `$2` rows of `table` matching `condition` (which uses `$1`, the cut-off).

    PostgreSQL's DELETE has no LIMIT: the rows are picked by ctid in a sub-select that has one, skipping rows
    another transaction has locked. The condition is repeated outside, so a row changed meanwhile is re-checked.
    Embed it as `WITH gone AS (<this>) ...` to use the deleted rows' `returning` columns; alone, see `counted`.
    """
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE {condition} LIMIT $2 FOR UPDATE SKIP LOCKED)) AND {condition} "
        f"RETURNING {returning}"
    )


def counted(delete: str) -> str:
    """A rule's statement: the DELETE, returning how many rows it removed."""
    return f"WITH gone AS ({delete}) SELECT count(*) FROM gone"


PROCESSED_EVENTS_SQL = counted(batch_delete("processed_events", "processed_at < $1"))


def processed_events_purge(keep: timedelta) -> Purge:
    """Idempotency claims (`consumer.claim_new`): a redelivery comes within minutes or hours of the first
    delivery, never after `keep`, so an older claim protects against nothing."""
    return Purge("processed_events", keep, PROCESSED_EVENTS_SQL)


class Retention:
    def __init__(
        self,
        pool: asyncpg.Pool,
        purges: Sequence[Purge],
        *,
        interval_s: float,
        batch_size: int,
        pause_s: float,
        lock_timeout_ms: int,
    ) -> None:
        self._pool, self._purges = pool, purges
        self._interval_s, self._batch_size, self._pause_s = interval_s, batch_size, pause_s
        self._lock_timeout_ms = lock_timeout_ms

    async def run(self) -> None:
        """Apply every rule, then again every interval, until cancelled; a failed round waits for the next."""
        await asyncio.sleep(FIRST_RUN_DELAY_S)
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # bookkeeping only: a failed round must not end the clean-up for good
                name, interval = type(exc).__name__, self._interval_s
                log.warning("retention: clean-up failed (%s: %s); next try in %.0f s", name, exc, interval)
            await asyncio.sleep(self._interval_s)

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Apply every rule until it finds no more old rows; returns the rows removed per rule name."""
        now = now or datetime.now(UTC)
        removed: dict[str, int] = {}
        for purge in self._purges:
            try:
                deleted = await self._purge(purge, now - purge.keep)
            except asyncpg.LockNotAvailableError:  # lock_timeout: something holds the table; next round
                log.warning("retention: %s is locked; its clean-up waits for the next round", purge.name)
                continue
            removed[purge.name] = deleted
        if any(removed.values()):
            log.info("retention: removed %s", ", ".join(f"{n} {name}" for name, n in removed.items() if n))
        return removed

    async def _purge(self, purge: Purge, cutoff: datetime) -> int:
        total = 0
        while True:
            deleted = await self._delete_batch(purge, cutoff)
            total += deleted
            DELETED_ROWS.labels(purge.name).inc(deleted)
            if deleted < self._batch_size:
                return total
            await asyncio.sleep(self._pause_s)

    async def _delete_batch(self, purge: Purge, cutoff: datetime) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            # SET LOCAL: ends with this transaction, so the pooled connection goes back unchanged.
            await conn.execute(f"SET LOCAL lock_timeout = {int(self._lock_timeout_ms)}")
            deleted = await conn.fetchval(purge.sql, cutoff, self._batch_size)
        return int(deleted)
