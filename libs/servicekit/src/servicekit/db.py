"""PostgreSQL access: an asyncpg pool and yoyo migrations applied at start-up."""

from __future__ import annotations

from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from yoyo import get_backend, read_migrations

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What a repository is handed: a plain connection or one borrowed from a pool.
    DbConnection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    DbConnection = asyncpg.Connection

DEFAULT_SLOTS = 4
SLOTS_SETTING = "servicekit.outbox_slots"
"""The session setting that holds the number of outbox slots (`create_pool(outbox_slots=...)` sets it): the writers'
statements and the relays read the same value from their connection (see `servicekit.outbox`). Every instance of a
service must use the same number: a key moved to another slot could overtake its older rows."""

SHARED_MIGRATIONS = Path(str(resources.files("servicekit") / "migrations"))


def _yoyo_url(dsn: str) -> str:
    # yoyo picks its driver from the URL scheme; psycopg 3 is the one installed.
    scheme, rest = dsn.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else dsn


def apply_migrations(dsn: str, *folders: Path, plumbing: bool = True) -> None:
    """Apply the shared plumbing tables (outbox, inbox; unless `plumbing` is false, for a service that publishes
    and consumes nothing) and the service's own migrations, in order.

    yoyo takes a lock in the database, so several instances starting at once apply each migration once.
    """
    backend = get_backend(_yoyo_url(dsn))
    shared = [str(SHARED_MIGRATIONS)] if plumbing else []
    migrations = read_migrations(*shared, *(str(f) for f in folders))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations))


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, *, outbox_slots: int = DEFAULT_SLOTS
) -> asyncpg.Pool:
    """A pool whose connections carry the outbox's slot count (`servicekit.outbox`), read by writers and relay."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        reset=_keep_session,
        server_settings={SLOTS_SETTING: str(outbox_slots)},
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with: nothing to undo on the server.

    asyncpg's default reset (unlock every advisory lock, UNLISTEN *, RESET ALL) costs a round trip on every
    release, that is on every transaction. The services keep no session state beyond a transaction: locks are
    transaction locks, listeners are removed by their owners, and the one session lock (the notifier's
    liveness lock) is released by its holder. An open transaction is still rolled back by the pool.
    """


def probe_per_key(subquery: str, alias: str, lock: str = "") -> str:
    """``CROSS JOIN LATERAL (subquery OFFSET 0 [lock]) AS alias``: the lookup of a batch of keys (``FROM unnest(...)
    AS k``, which `subquery` names) as one index probe per key, in the keys' order, in every plan.

    asyncpg prepares every statement, and PostgreSQL keeps a prepared statement's generic plan until the table is
    analyzed again. Written as a join of the keys to the table, the plan cached while the table was small read it
    whole and hashed it against the keys, and went on doing so after the table had grown tenfold (9 ms a call
    instead of 0.7 in the bench). `OFFSET 0` keeps the planner from flattening the subquery into that join again;
    `LIMIT 1` does not do it reliably (campaigns' check walked another index until a row matched).
    `tests/test_batch_lookup_plans.py` reads the plans.
    """
    return f"CROSS JOIN LATERAL ({subquery} OFFSET 0{f' {lock}' if lock else ''}) AS {alias}"


def as_columns(rows: Collection[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arguments of `unnest($1::text[], $2::int[], ...)`, which writes or
    matches many rows in one statement (one execution on the server, where `executemany` runs one per row)."""
    return [[row[column] for row in rows] for column in range(width)]


async def ping(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("SELECT true"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
