"""Orders in PostgreSQL: loaded and saved in batches (one round trip per statement, not per order)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from contracts.orders import Customer
from contracts.statuses import CurrentStatuses, StatusRef, StatusType
from orders.domain import Applied, Change, DetailsChange, Order, Outcome
from servicekit.db import DbConnection, probe_per_key
from servicekit.outbox import OutboxRecord, outbox_arguments, outbox_insert
from servicekit.retention import Purge, batch_delete, counted

OrderKey = tuple[str, str]  # (partner_id, order_id)

ORDER_COLUMNS = (
    "partner_id, order_id, customer_id, customer_phone, customer_name, sms_consent, amount, currency, "
    "placed_at, last_sequence, details_occurred_at, details_source_sequence"
)


# Rows are read back as stored: they were validated on the way in, so the models are built without validating
# again (model_construct), which was the larger part of loading a batch's orders.


def _order(row: asyncpg.Record) -> Order:
    return Order(
        partner_id=row["partner_id"],
        order_id=row["order_id"],
        customer=Customer.model_construct(
            id=row["customer_id"],
            phone=row["customer_phone"],
            name=row["customer_name"],
            sms_consent=row["sms_consent"],
        ),
        amount=row["amount"],
        currency=row["currency"],
        placed_at=row["placed_at"],
        last_sequence=row["last_sequence"],
        details_occurred_at=row["details_occurred_at"],
        details_source_sequence=row["details_source_sequence"],
    )


STATUS_COLUMNS = "partner_id, order_id, type, code, name, occurred_at, source_sequence, recorded_at, entered_at"
# The lookups by a batch of keys probe an index per key in every plan (`probe_per_key` says why).
LOAD_STATUSES = "SELECT s.* FROM unnest($1::text[], $2::text[]) AS k(p, o) " + probe_per_key(
    f"SELECT {STATUS_COLUMNS} FROM order_statuses WHERE partner_id = k.p AND order_id = k.o", "s"
)
# The statuses of the orders ($1, $2) and which of the events $4 the consumer $3 claimed before (rows with only
# `claimed` set).
LOAD_STATUSES_AND_CLAIMS = (
    f"SELECT s.*, NULL::text AS claimed FROM ({LOAD_STATUSES}) AS s "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p.event_id "
    "FROM unnest($4::text[]) AS c(event_id) "
    + probe_per_key("SELECT event_id FROM processed_events WHERE consumer = $3 AND event_id = c.event_id", "p")
)


def _orders_of_keys(lock: str) -> str:
    """The orders of the keys ($1, $2), probed (and with `lock`, locked) in the keys' order, which `_load` sorts: two
    batches never deadlock on the same orders."""
    return "SELECT o.* FROM unnest($1::text[], $2::text[]) AS k(p, o) " + probe_per_key(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = k.p AND order_id = k.o", "o", lock
    )


LOAD_ORDERS, LOCK_ORDERS = _orders_of_keys(""), _orders_of_keys("FOR UPDATE")


async def load_orders(conn: DbConnection, keys: Iterable[OrderKey], *, lock: bool) -> dict[OrderKey, Order]:
    """The orders with their current statuses; `lock` takes row locks for the rest of the transaction.

    Two statements on purpose: a statement that waited for a row lock sees the locked row's new version but
    the other tables as they were when it started, so the statuses are read after the lock is held.
    """
    orders, partners, ids = await _load(conn, keys, lock=lock)
    _with_statuses(orders, await conn.fetch(LOAD_STATUSES, partners, ids))
    return orders


async def load_batch(
    conn: DbConnection, keys: Iterable[OrderKey], consumer: str, event_ids: Sequence[str]
) -> tuple[dict[OrderKey, Order], set[str]]:
    """A batch's orders, locked, with their statuses, and which of its events `consumer` processed before: the
    claims are read with the statuses, once the locks are held (so a batch that waited for them sees the claims of
    the one it waited for). Two round trips; the claims on their own were a third."""
    orders, partners, ids = await _load(conn, keys, lock=True)
    rows = await conn.fetch(LOAD_STATUSES_AND_CLAIMS, partners, ids, consumer, list(event_ids))
    _with_statuses(orders, [r for r in rows if r["claimed"] is None])
    return orders, {r["claimed"] for r in rows if r["claimed"] is not None}


async def _load(
    conn: DbConnection, keys: Iterable[OrderKey], *, lock: bool
) -> tuple[dict[OrderKey, Order], list[str], list[str]]:
    keys = sorted(set(keys))  # the lock order
    partners, ids = [k[0] for k in keys], [k[1] for k in keys]
    rows = await conn.fetch(LOCK_ORDERS if lock else LOAD_ORDERS, partners, ids)
    return {(r["partner_id"], r["order_id"]): _order(r) for r in rows}, partners, ids


def _with_statuses(orders: dict[OrderKey, Order], status_rows: Iterable[asyncpg.Record]) -> None:
    for r in status_rows:
        ref = StatusRef.model_construct(code=r["code"], name=r["name"])
        applied = Applied(ref, r["occurred_at"], r["source_sequence"], r["recorded_at"], r["entered_at"])
        orders[(r["partner_id"], r["order_id"])].statuses[StatusType(r["type"])] = applied


@dataclass(frozen=True)
class HistoryEntry:
    partner_id: str
    order_id: str
    event_id: str
    change: Change
    statuses: CurrentStatuses | None = None  # of an applied change: the order's, as its published event carried them


@dataclass(frozen=True)
class DetailsEntry:
    partner_id: str
    order_id: str
    event_id: str
    change: DetailsChange


@dataclass(frozen=True)
class BatchWrites:
    """Everything a batch of commands writes: it goes to the database in one statement."""

    orders: Sequence[Order]
    statuses: Sequence[tuple[Order, StatusType]]  # the current statuses that changed (the others stay as stored)
    history: Sequence[HistoryEntry]
    details_history: Sequence[DetailsEntry]
    claims: Sequence[str]  # processed event ids
    events: Sequence[OutboxRecord]


def _columns(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(types))


_ORDER_TYPES = ("text", "text", "text", "text", "text", "boolean", "numeric", "text", "timestamptz", "integer",
                "timestamptz", "bigint", "timestamptz")  # fmt: skip
_STATUS_TYPES = ("text", "text", "text", "text", "text", "timestamptz", "bigint", "timestamptz", "timestamptz")
_HISTORY_TYPES = ("text", "text", "text", "text", "text", "text", "text", "integer", "bigint", "timestamptz",
                  "timestamptz", "text", "text", "text", "text", "text", "text", "text", "text", "text")  # fmt: skip
_HISTORY_COLUMNS = (
    "partner_id, order_id, type, outcome, from_code, to_code, to_name, sequence, source_sequence, occurred_at, "
    "recorded_at, event_id, comment, from_name, general_code, general_name, delivery_code, delivery_name, "
    "payment_code, payment_name"
)
_DETAILS_TYPES = ("text", "text", "text", "text", "bigint", "timestamptz", "timestamptz", "text")
_DETAILS_COLUMNS = "partner_id, order_id, outcome, fields, source_sequence, occurred_at, recorded_at, event_id"
_DETAILS_AT = 1 + len(_ORDER_TYPES) + len(_STATUS_TYPES) + len(_HISTORY_TYPES)
_CLAIMS_AT = _DETAILS_AT + len(_DETAILS_TYPES)
SAVE_BATCH = (
    "WITH saved_orders AS ("
    f"INSERT INTO orders ({ORDER_COLUMNS}, updated_at) SELECT * FROM unnest({_columns(1, _ORDER_TYPES)}) "
    "ON CONFLICT (partner_id, order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, "
    "customer_phone = EXCLUDED.customer_phone, customer_name = EXCLUDED.customer_name, "
    "sms_consent = EXCLUDED.sms_consent, amount = EXCLUDED.amount, currency = EXCLUDED.currency, "
    "placed_at = EXCLUDED.placed_at, last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at, "
    "details_occurred_at = EXCLUDED.details_occurred_at, details_source_sequence = EXCLUDED.details_source_sequence "
    "RETURNING 1), "
    "saved_statuses AS ("
    "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, source_sequence, recorded_at, "
    f"entered_at) SELECT * FROM unnest({_columns(1 + len(_ORDER_TYPES), _STATUS_TYPES)}) "
    "ON CONFLICT (partner_id, order_id, type) DO UPDATE SET code = EXCLUDED.code, name = EXCLUDED.name, "
    "occurred_at = EXCLUDED.occurred_at, source_sequence = EXCLUDED.source_sequence, "
    "recorded_at = EXCLUDED.recorded_at, entered_at = EXCLUDED.entered_at "
    "RETURNING 1), "
    f"added_history AS (INSERT INTO status_history ({_HISTORY_COLUMNS}) SELECT {_HISTORY_COLUMNS} FROM unnest("
    f"{_columns(1 + len(_ORDER_TYPES) + len(_STATUS_TYPES), _HISTORY_TYPES)}) WITH ORDINALITY AS h("
    f"{_HISTORY_COLUMNS}, n) ORDER BY n RETURNING 1), "
    f"added_details AS (INSERT INTO order_details_history ({_DETAILS_COLUMNS}) SELECT partner_id, order_id, outcome, "
    "string_to_array(fields, ' '), source_sequence, occurred_at, recorded_at, event_id FROM unnest("
    f"{_columns(_DETAILS_AT, _DETAILS_TYPES)}) WITH ORDINALITY AS d({_DETAILS_COLUMNS}, n) ORDER BY n RETURNING 1), "
    # A plain INSERT: should a concurrent consumer have claimed one meanwhile (a rebalance race), the unique
    # violation rolls this batch back and the replay then sees the claim.
    f"claims AS (INSERT INTO processed_events (consumer, event_id) SELECT ${_CLAIMS_AT}, "
    f"unnest(${_CLAIMS_AT + 1}::text[]) RETURNING 1), "
    f"{outbox_insert(_CLAIMS_AT + 2)} "
    "SELECT (SELECT count(*) FROM outbox_woken)"
)


async def save_batch(conn: DbConnection, consumer: str, writes: BatchWrites, now: datetime) -> None:
    """Insert or update the orders, upsert the current statuses that changed, add the history (of statuses and of
    details), the claims and the events: one statement, one round trip (the orders come first in it, so their
    statuses' foreign keys hold)."""
    orders = writes.orders
    statuses = [(o, t, o.statuses[t]) for o, t in writes.statuses]
    history = [e.change for e in writes.history]
    details = [e.change for e in writes.details_history]
    await conn.execute(
        SAVE_BATCH,
        [o.partner_id for o in orders], [o.order_id for o in orders], [o.customer.id for o in orders],
        [o.customer.phone for o in orders], [o.customer.name for o in orders],
        [o.customer.sms_consent for o in orders], [o.amount for o in orders], [o.currency for o in orders],
        [o.placed_at for o in orders], [o.last_sequence for o in orders], [o.details_occurred_at for o in orders],
        [o.details_source_sequence for o in orders], [now] * len(orders),
        [o.partner_id for o, _, _ in statuses], [o.order_id for o, _, _ in statuses],
        [str(t) for _, t, _ in statuses], [a.ref.code for _, _, a in statuses], [a.ref.name for _, _, a in statuses],
        [a.occurred_at for _, _, a in statuses], [a.source_sequence for _, _, a in statuses],
        [a.recorded_at for _, _, a in statuses], [a.entered_at for _, _, a in statuses],
        [e.partner_id for e in writes.history], [e.order_id for e in writes.history],
        [str(c.status_type) for c in history], [str(c.outcome) for c in history],
        [c.from_status.code if c.from_status else None for c in history], [c.to_status.code for c in history],
        [c.to_status.name for c in history], [c.sequence for c in history],
        [c.requested.source_sequence for c in history], [c.requested.occurred_at for c in history],
        [now] * len(history), [e.event_id for e in writes.history], [c.requested.comment for c in history],
        [c.from_status.name if c.from_status else None for c in history], *_carried_statuses(writes.history),
        [e.partner_id for e in writes.details_history], [e.order_id for e in writes.details_history],
        [str(d.outcome) for d in details], [" ".join(d.fields) for d in details],
        [d.reported.source_sequence for d in details], [d.reported.occurred_at for d in details],
        [now] * len(details), [e.event_id for e in writes.details_history],
        consumer, list(writes.claims),
        *outbox_arguments(writes.events),
    )  # fmt: skip


_ORDERED_TYPES = (StatusType.GENERAL, StatusType.DELIVERY, StatusType.PAYMENT)


def _carried_statuses(history: Sequence[HistoryEntry]) -> list[list[str | None]]:
    """The history rows' general_code, general_name, delivery_code, ..., payment_name: six columns."""
    columns: list[list[str | None]] = [[] for _ in range(2 * len(_ORDERED_TYPES))]
    for entry in history:
        refs = [entry.statuses.of(t) if entry.statuses else None for t in _ORDERED_TYPES]
        for n, ref in enumerate(refs):
            columns[2 * n].append(ref.code if ref else None)
            columns[2 * n + 1].append(ref.name if ref else None)
    return columns


async def history_of(conn: DbConnection, partner_id: str, order_id: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT type, outcome, from_code, to_code, to_name, sequence, source_sequence, occurred_at, recorded_at, "
        "event_id, comment FROM status_history WHERE partner_id = $1 AND order_id = $2 ORDER BY id LIMIT $3",
        partner_id,
        order_id,
        limit,
    )
    return [dict(r) for r in rows]


async def details_history_of(
    conn: DbConnection, partner_id: str, order_id: str, limit: int = 500
) -> list[dict[str, Any]]:
    """Every upsert's details of the order: created, updated, unchanged or stale, with the fields that differed."""
    rows = await conn.fetch(
        "SELECT outcome, fields, source_sequence, occurred_at, recorded_at, event_id FROM order_details_history "
        "WHERE partner_id = $1 AND order_id = $2 ORDER BY id LIMIT $3",
        partner_id,
        order_id,
        limit,
    )
    return [dict(r) for r in rows]


def _lock_id(key: OrderKey) -> int:
    """A 64-bit advisory lock id for an order: the same in every process (unlike Python's salted hash)."""
    digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_order_keys(conn: DbConnection, keys: Iterable[OrderKey]) -> None:
    """Transaction-scoped advisory locks on the orders' keys, in a fixed order, whether the orders exist or not.

    A row lock (`FOR UPDATE`) locks only an order that exists: two writers of one new order both found none, both
    created it, and both applied its first statuses (history and events twice, so an SMS twice). A writer that may
    create an order takes these first, before any row lock, so writers of one order run one after the other and
    the later one reads the order the earlier one committed. Writers that only set statuses never create, so they
    rely on the row lock alone and never wait for these: there is no cycle between the two kinds of lock.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", sorted(map(_lock_id, set(keys)))
    )


async def claim_request_key(conn: DbConnection, partner_id: str, key: str, request_hash: str) -> asyncpg.Record | None:
    """Claim an Idempotency-Key for this transaction, or read the response stored under it.

    The row is inserted with a placeholder answer (`store_response` replaces it before the commit), so no one ever
    sees the placeholder: a duplicate that arrives while the first request runs waits on the unique key until the
    first commits, then reads its answer (or claims the key itself, should the first have rolled back). Returns
    None when claimed, else the stored request hash, status code and body."""
    claimed = await conn.fetchval(
        "INSERT INTO idempotency_keys (partner_id, key, request_hash, status_code, body) VALUES ($1, $2, $3, 0, '{}') "
        "ON CONFLICT (partner_id, key) DO NOTHING RETURNING true",
        partner_id,
        key,
        request_hash,
    )
    if claimed:
        return None
    stored = await stored_response(conn, partner_id, key)
    assert stored is not None, "a key that conflicted is committed (keys are deleted only after days)"
    return stored


async def stored_response(conn: DbConnection, partner_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT request_hash, status_code, body FROM idempotency_keys WHERE partner_id = $1 AND key = $2",
        partner_id,
        key,
    )


async def store_response(conn: DbConnection, partner_id: str, key: str, status_code: int, body: Any) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status_code = $3, body = $4 WHERE partner_id = $1 AND key = $2",
        partner_id,
        key,
        status_code,
        json.dumps(body, default=str),
    )


# --- retention (servicekit.retention) -----------------------------------------------------------------------------
# status_history is not purged: it is the order's history, part of the product (GET .../history), not bookkeeping.

IDEMPOTENCY_KEYS_SQL = counted(batch_delete("idempotency_keys", "created_at < $1"))


def retention_purges(idempotency_keys: timedelta) -> list[Purge]:
    """Stored REST responses older than `idempotency_keys`: no client retries a request that late."""
    return [Purge("idempotency_keys", idempotency_keys, IDEMPOTENCY_KEYS_SQL)]


__all__ = ["Outcome"]
