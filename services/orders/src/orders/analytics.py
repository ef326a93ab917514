"""Read-model queries for reports and segments. Only statuses flagged `include_in_analytics` count;
the flag is read from the registry replica at query time, so a change of flag takes effect at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from servicekit.db import DbConnection


async def current_distribution(
    conn: DbConnection, partner_id: str, status_type: str, codes: list[str]
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT code, count(*) AS n FROM order_statuses WHERE partner_id = $1 AND type = $2 "
        "AND code = ANY($3::text[]) GROUP BY code",
        partner_id,
        status_type,
        codes,
    )
    return {r["code"]: r["n"] for r in rows}


async def transitions_into(
    conn: DbConnection, partner_id: str, codes: list[str], since: datetime | None, until: datetime | None
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT to_code, count(*) AS n FROM status_history WHERE partner_id = $1 AND outcome = 'applied' "
        "AND to_code = ANY($2::text[]) AND ($3::timestamptz IS NULL OR occurred_at >= $3) "
        "AND ($4::timestamptz IS NULL OR occurred_at < $4) GROUP BY to_code",
        partner_id,
        codes,
        since,
        until,
    )
    return {r["to_code"]: r["n"] for r in rows}


async def time_in_status(conn: DbConnection, partner_id: str, code: str) -> dict[str, Any]:
    """Median and p90 of completed stays in `code`: from entering it to the next change of the same type."""
    row = await conn.fetchrow(
        "WITH stays AS (SELECT to_code, occurred_at, lead(occurred_at) OVER "
        "(PARTITION BY order_id, type ORDER BY sequence) AS left_at FROM status_history "
        "WHERE partner_id = $1 AND outcome = 'applied') "
        "SELECT count(*) AS n, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM left_at - occurred_at)) AS median, "
        "percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM left_at - occurred_at)) AS p90 "
        "FROM stays WHERE to_code = $2 AND left_at IS NOT NULL",
        partner_id,
        code,
    )
    assert row is not None
    return {"completed_stays": row["n"], "median_seconds": row["median"], "p90_seconds": row["p90"]}


async def customers_entering(
    conn: DbConnection,
    partner_id: str,
    code: str,
    since: datetime | None,
    until: datetime | None,
    after_customer: str,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT o.customer_id, max(o.customer_name) AS name, max(o.customer_phone) AS phone, "
        "bool_or(o.sms_consent) AS sms_consent, count(DISTINCT h.order_id) AS orders, "
        "max(h.occurred_at) AS last_entered_at "
        "FROM status_history h JOIN orders o ON o.partner_id = h.partner_id AND o.order_id = h.order_id "
        "WHERE h.partner_id = $1 AND h.outcome = 'applied' AND h.to_code = $2 "
        "AND ($3::timestamptz IS NULL OR h.occurred_at >= $3) AND ($4::timestamptz IS NULL OR h.occurred_at < $4) "
        "AND o.customer_id > $5 GROUP BY o.customer_id ORDER BY o.customer_id LIMIT $6",
        partner_id,
        code,
        since,
        until,
        after_customer,
        limit,
    )
    return [dict(r) for r in rows]
