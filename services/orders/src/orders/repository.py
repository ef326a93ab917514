"""Orders in PostgreSQL: loaded and saved in batches (one round trip per statement, not per order)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from contracts.orders import Customer
from contracts.statuses import StatusRef, StatusType
from orders.domain import Applied, Change, Order, Outcome
from servicekit.db import DbConnection

OrderKey = tuple[str, str]  # (partner_id, order_id)

ORDER_COLUMNS = (
    "partner_id, order_id, customer_id, customer_phone, customer_name, sms_consent, amount, currency, "
    "placed_at, last_sequence"
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
    )


async def load_orders(conn: DbConnection, keys: Iterable[OrderKey], *, lock: bool) -> dict[OrderKey, Order]:
    """The orders with their current statuses (one query); `lock` takes row locks for the rest of the transaction."""
    keys = sorted(set(keys))  # a fixed lock order: two batches never deadlock on the same orders
    rows = await conn.fetch(
        f"SELECT {', '.join(f'o.{c.strip()}' for c in ORDER_COLUMNS.split(','))}, s.type, s.code, s.name, "
        "s.occurred_at, s.source_sequence, s.since FROM orders o "
        "JOIN unnest($1::text[], $2::text[]) AS k(p, o) ON o.partner_id = k.p AND o.order_id = k.o "
        "LEFT JOIN order_statuses s ON s.partner_id = o.partner_id AND s.order_id = o.order_id "
        "ORDER BY o.partner_id, o.order_id" + (" FOR UPDATE OF o" if lock else ""),
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    orders: dict[OrderKey, Order] = {}
    for r in rows:
        key = (r["partner_id"], r["order_id"])
        if key not in orders:
            orders[key] = _order(r)
        order = orders[key]
        if r["type"] is not None:
            order.statuses[StatusType(r["type"])] = Applied(
                StatusRef.model_construct(code=r["code"], name=r["name"]),
                r["occurred_at"],
                r["source_sequence"],
                r["since"],
            )
    return orders


async def save_orders(conn: DbConnection, orders: Sequence[Order], now: datetime) -> None:
    """Insert or update the orders and replace their current statuses."""
    if not orders:
        return
    await conn.executemany(
        f"INSERT INTO orders ({ORDER_COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT (partner_id, order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, "
        "customer_phone = EXCLUDED.customer_phone, customer_name = EXCLUDED.customer_name, "
        "sms_consent = EXCLUDED.sms_consent, amount = EXCLUDED.amount, currency = EXCLUDED.currency, "
        "placed_at = EXCLUDED.placed_at, last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at",
        [
            (o.partner_id, o.order_id, o.customer.id, o.customer.phone, o.customer.name, o.customer.sms_consent,
             o.amount, o.currency, o.placed_at, o.last_sequence, now)
            for o in orders
        ],
    )  # fmt: skip
    await conn.executemany(
        "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, source_sequence, since) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (partner_id, order_id, type) DO UPDATE SET "
        "code = EXCLUDED.code, name = EXCLUDED.name, occurred_at = EXCLUDED.occurred_at, "
        "source_sequence = EXCLUDED.source_sequence, since = EXCLUDED.since",
        [
            (o.partner_id, o.order_id, str(t), a.ref.code, a.ref.name, a.occurred_at, a.source_sequence, a.since)
            for o in orders
            for t, a in o.statuses.items()
        ],
    )


@dataclass(frozen=True)
class HistoryEntry:
    partner_id: str
    order_id: str
    event_id: str
    change: Change


async def add_history(conn: DbConnection, entries: Sequence[HistoryEntry]) -> None:
    if not entries:
        return
    await conn.executemany(
        "INSERT INTO status_history (partner_id, order_id, type, outcome, from_code, to_code, to_name, sequence, "
        "source_sequence, occurred_at, event_id, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [
            (e.partner_id, e.order_id, str(e.change.status_type), str(e.change.outcome),
             e.change.from_status.code if e.change.from_status else None, e.change.to_status.code,
             e.change.to_status.name, e.change.sequence, e.change.requested.source_sequence,
             e.change.requested.occurred_at, e.event_id, e.change.requested.comment)
            for e in entries
        ],
    )  # fmt: skip


async def history_of(conn: DbConnection, partner_id: str, order_id: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT type, outcome, from_code, to_code, to_name, sequence, source_sequence, occurred_at, recorded_at, "
        "event_id, comment FROM status_history WHERE partner_id = $1 AND order_id = $2 ORDER BY id LIMIT $3",
        partner_id,
        order_id,
        limit,
    )
    return [dict(r) for r in rows]


async def stored_response(conn: DbConnection, partner_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT request_hash, status_code, body FROM idempotency_keys WHERE partner_id = $1 AND key = $2",
        partner_id,
        key,
    )


async def store_response(
    conn: DbConnection, partner_id: str, key: str, request_hash: str, status_code: int, body: Any
) -> None:
    await conn.execute(
        # Two requests racing on one key: the first stored answer stands, the second reads it back.
        "INSERT INTO idempotency_keys (partner_id, key, request_hash, status_code, body) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (partner_id, key) DO NOTHING",
        partner_id,
        key,
        request_hash,
        status_code,
        json.dumps(body, default=str),
    )


__all__ = ["Outcome"]
