"""The lookups each hop makes per batch probe an index once per key, whatever size the tables had when the plan was
cached (issue 34).

asyncpg prepares every statement, and PostgreSQL keeps a prepared statement's generic plan until the tables are
analyzed again. Written as joins of the keys to the table, the plans cached while the tables were small (or not yet
analyzed: PostgreSQL then assumes ten pages) read the whole table, or a whole provider's or consumer's rows, and
hashed them against the keys; after the tables had grown tenfold that cost 5-20 ms a call until autovacuum came by.
Here each statement's generic plan is read with its tables analyzed at a warm-up's size (1,000 rows, as in the bench
when it cached them): every scan of a looked-up table must be an index probe (or an index scan for `= ANY` of the
keys), which holds at any size. The same check of a join fails.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import campaigns.repository
import notifier.repository
import orders.repository
import webhooks.repository
from servicekit.db import apply_migrations

# service -> (its migrations, {statement name: (SQL, the tables it looks up)})
LOOKUPS: dict[str, tuple[Path, dict[str, tuple[str, set[str]]]]] = {
    "orders": (
        Path(orders.repository.__file__).parent / "migrations",
        {
            "lock orders": (orders.repository.LOCK_ORDERS, {"orders"}),
            "load orders": (orders.repository.LOAD_ORDERS, {"orders"}),
            "statuses": (orders.repository.LOAD_STATUSES, {"order_statuses"}),
            "statuses and claims": (orders.repository.LOAD_STATUSES_AND_CLAIMS, {"order_statuses", "processed_events"}),
        },
    ),
    "campaigns": (
        Path(campaigns.repository.__file__).parent / "migrations",
        {
            "evaluated": (campaigns.repository.EVALUATED_SQL, {"evaluations"}),
            "fired for orders": (campaigns.repository.FIRED_FOR_ORDERS_SQL, {"evaluations"}),
        },
    ),
    "notifier": (
        Path(notifier.repository.__file__).parent / "migrations",
        {
            "dispatch": (notifier.repository.DISPATCH, {"message_parts", "receipts"}),
            "parts": (notifier.repository.PARTS, {"message_parts"}),
            "receipt statuses": (notifier.repository.RECEIPT_STATUSES, {"receipts"}),
            "receipts of messages": (notifier.repository.RECEIPTS_OF, {"message_parts", "receipts"}),
            "opted out": (notifier.repository.OPTED_OUT, {"opt_outs"}),
            "lock messages": (notifier.repository.LOCK_MESSAGES, {"messages"}),
        },
    ),
    "webhooks": (
        Path(webhooks.repository.__file__).parent / "migrations",
        {"pending sequences": (webhooks.repository.PENDING_SEQUENCES, {"messages"})},
    ),
}
# A warm-up's rows in the looked-up tables (rows without the rows their foreign keys name: a plan needs none).
FILL = {
    "orders": [
        "INSERT INTO orders (partner_id, order_id, customer_id, amount, currency, placed_at) "
        "SELECT 'p', 'o' || i, 'c' || i, 1, 'RUB', now() FROM generate_series(1, 1000) AS i",
        "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, recorded_at, entered_at) "
        "SELECT 'p', 'o' || i, t, 'new', 'New', now(), now(), now() "
        "FROM generate_series(1, 1000) AS i, unnest(ARRAY['general', 'delivery', 'payment']) AS t",
        "INSERT INTO processed_events (consumer, event_id) "
        "SELECT 'orders', 'e' || i FROM generate_series(1, 1000) AS i",
    ],
    "campaigns": [
        "INSERT INTO evaluations (campaign_id, event_id, partner_id, order_id, customer_id, outcome, evaluated_at) "
        "SELECT 'c' || i % 3, 'e' || i, 'p', 'o' || i, 'c' || i, "
        "CASE WHEN i % 2 = 0 THEN 'fired' ELSE 'filtered_out' END, now() FROM generate_series(1, 1000) AS i",
    ],
    "notifier": [
        "SET session_replication_role = replica",
        "INSERT INTO message_parts (provider, provider_message_id, message_id) "
        "SELECT 'console', 'm' || i, gen_random_uuid() FROM generate_series(1, 1000) AS i",
        "RESET session_replication_role",
        "INSERT INTO receipts (provider, provider_message_id, segment, status, raw_status) "
        "SELECT 'console', 'm' || i, -1, 'delivered', 'DELIVRD' FROM generate_series(1, 1000) AS i",
        "INSERT INTO opt_outs (partner_id, phone, source) "
        "SELECT 'p', '+7916' || i, 'api' FROM generate_series(1, 1000) AS i",
        "INSERT INTO messages (message_id, partner_id, send_sms_id, campaign_id, order_id, customer_id, phone, text, "
        "encoding, segments, status, requested_at, expires_at, command) SELECT gen_random_uuid(), 'p', 's' || i, 'c', "
        "'o' || i, 'c' || i, '+7916' || i, 'text', 'gsm7', 1, 'dispatched', now(), now(), '' "
        "FROM generate_series(1, 1000) AS i",
    ],
    "webhooks": [
        "SET session_replication_role = replica",
        "INSERT INTO messages (id, partner_id, endpoint_id, event_id, event_type, order_id, sequence, payload, state, "
        "next_attempt_at) SELECT 'm' || i, 'p', 'e' || i % 3, 'v' || i, 'order.status-changed.v1', 'o' || i, 1, '{}', "
        "CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'succeeded' END, now() FROM generate_series(1, 1000) AS i",
        "RESET session_replication_role",
    ],
}
# The same lookups of orders as joins, as they were written before: the check must tell them apart.
JOINED = {
    "statuses": (
        f"SELECT {orders.repository.STATUS_COLUMNS} FROM order_statuses s JOIN unnest($1::text[], $2::text[]) "
        "AS k(p, o) ON s.partner_id = k.p AND s.order_id = k.o",
        {"order_statuses"},
    ),
}


async def generic_plan(conn: asyncpg.Connection, sql: str) -> dict[str, Any]:
    """The plan a prepared statement keeps once PostgreSQL settles on its generic plan (planned without its values)."""
    parameters = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    arguments = f"({', '.join(['NULL'] * parameters)})" if parameters else ""
    async with conn.transaction():  # EXPLAIN of a write plans it without running it
        await conn.execute(f"PREPARE lookup AS {sql}")
        found = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE lookup{arguments}")
        await conn.execute("DEALLOCATE lookup")
    top: dict[str, Any] = json.loads(found)[0]["Plan"]
    return top


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def whole_scans(plan: dict[str, Any], tables: set[str]) -> list[str]:
    """The scans of `tables` that are not driven by the keys: not an index probe, nor a bitmap scan of `= ANY`."""
    found = []
    for node in nodes(plan):
        if node.get("Relation Name") not in tables or node["Node Type"] == "ModifyTable":
            continue
        probe = node["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" in node
        any_of_keys = node["Node Type"] == "Bitmap Heap Scan" and "ANY" in node.get("Recheck Cond", "")
        if not (probe or any_of_keys):
            found.append(f"{node['Node Type']} on {node['Relation Name']} {node.get('Recheck Cond', '')}".strip())
    return found


@pytest.mark.parametrize("service", sorted(LOOKUPS))
async def test_every_batch_lookup_probes_an_index_per_key_in_its_generic_plan(database: str, service: str) -> None:
    folder, statements = LOOKUPS[service]
    await asyncio.to_thread(apply_migrations, database, folder)
    conn = await asyncpg.connect(database)
    try:
        for fill in FILL[service]:
            await conn.execute(fill)
        await conn.execute("ANALYZE")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        scans = {name: whole_scans(await generic_plan(conn, sql), tables) for name, (sql, tables) in statements.items()}
        assert all(not found for found in scans.values()), scans
        if service == "orders":
            joined = {
                name: whole_scans(await generic_plan(conn, sql), tables) for name, (sql, tables) in JOINED.items()
            }
            assert all(joined.values()), f"the check no longer tells a join from a probe: {joined}"
    finally:
        await conn.close()
