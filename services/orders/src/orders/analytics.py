"""Read-model queries for reports and segments. Only statuses flagged `include_in_analytics` count;
the flag is read from the registry replica at query time, so a change of flag takes effect at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from servicekit.db import DbConnection

# The longest period the per-day reports take: a year, leap day included. Longer, a chart has more days than a
# screen has room for bars, and the queries read more than a page load should wait for.
MAX_PERIOD_DAYS = 366
# The days a period may name: every midnight of them, in any time zone, is an instant PostgreSQL and the other
# services hold (the console offers the same dates).
EARLIEST_DAY, LATEST_DAY = date(1970, 1, 1), date(2999, 12, 31)


@dataclass(frozen=True)
class Period:
    """Whole days, `first_day` to `last_day` both included, as the calendar of `time_zone` counts them."""

    first_day: date
    last_day: date
    time_zone: str

    def refusal(self) -> tuple[str, str] | None:
        """(code, message) when the period cannot be reported on: reversed, or longer than MAX_PERIOD_DAYS."""
        if self.last_day < self.first_day:
            return "reversed_range", "last_day is before first_day"
        if self.length() > MAX_PERIOD_DAYS:
            return "range_too_long", f"the period is longer than {MAX_PERIOD_DAYS} days"
        return None

    def length(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range(self.length())]

    def midnights(self) -> list[datetime]:
        """Where each day starts, and the end of the last one: one more than the days. Each is the local midnight
        in the zone (a day across a change of clocks is 23 or 25 hours long)."""
        zone = ZoneInfo(self.time_zone)
        return [datetime.combine(self.first_day + timedelta(days=n), time(), zone) for n in range(self.length() + 1)]


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


async def entries_per_day(
    conn: DbConnection, partner_id: str, codes: list[str], period: Period
) -> dict[str, list[int]]:
    """For each of `codes`, how many times orders entered it on each day of the period (zeros included): one
    query, through `status_history_entries`, whatever the period's length. `width_bucket` puts each entry in its
    day by the period's own midnights, so the days are the user's and PostgreSQL needs no time zone of its own."""
    midnights = period.midnights()
    rows = await conn.fetch(
        "SELECT to_code, width_bucket(occurred_at, $3::timestamptz[]) AS day, count(*) AS n FROM status_history "
        "WHERE partner_id = $1 AND outcome = 'applied' AND to_code = ANY($2::text[]) "
        "AND occurred_at >= $4 AND occurred_at < $5 GROUP BY to_code, day",
        partner_id,
        codes,
        midnights,
        midnights[0],
        midnights[-1],
    )
    counts = {code: [0] * period.length() for code in codes}
    for row in rows:
        counts[row["to_code"]][row["day"] - 1] = row["n"]  # bucket 1 is the first day
    return counts


async def transitions_between(
    conn: DbConnection, partner_id: str, codes: list[str], period: Period
) -> dict[tuple[str, str], int]:
    """How many times an order went from one of `codes` to the next of `codes` it entered (of any type, whatever
    unflagged statuses came between), counted on the day it arrived: by (from, to). One query: the arrivals in
    the period through `status_history_entries`, each with one backward probe of its order's history
    (`status_history_by_order`) for the flagged status it came from, which may have been entered before the
    period. An order's first flagged status comes from none and is not a transition."""
    midnights = period.midnights()
    rows = await conn.fetch(
        "SELECT came_from, to_code, count(*) AS n FROM ("
        " SELECT h.to_code, (SELECT p.to_code FROM status_history p"
        "  WHERE p.partner_id = h.partner_id AND p.order_id = h.order_id AND p.id < h.id"
        "  AND p.outcome = 'applied' AND p.to_code = ANY($2::text[]) ORDER BY p.id DESC LIMIT 1) AS came_from"
        " FROM status_history h WHERE h.partner_id = $1 AND h.outcome = 'applied' AND h.to_code = ANY($2::text[])"
        " AND h.occurred_at >= $3 AND h.occurred_at < $4"
        ") arrivals WHERE came_from IS NOT NULL GROUP BY came_from, to_code",
        partner_id,
        codes,
        midnights[0],
        midnights[-1],
    )
    return {(row["came_from"], row["to_code"]): row["n"] for row in rows}
