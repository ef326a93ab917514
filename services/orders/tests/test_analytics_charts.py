"""The analytics behind the console's charts, against real PostgreSQL and Kafka: entries into each flagged status
per day of a period (in the asker's time zone, zeros included), the moves between flagged statuses, the periods
refused, one partner's orders only, and one indexed query per chart on a large history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import orders
from orders import analytics
from servicekit.db import apply_migrations, create_pool

Clients = Callable[..., httpx.AsyncClient]
PERIOD = {"first_day": "2026-11-02", "last_day": "2026-11-08", "time_zone": "Europe/Moscow"}  # UTC+3


def at(text: str) -> str:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).isoformat()


async def place(client: httpx.AsyncClient, order_id: str, *moves: tuple[str, str]) -> None:
    """An order placed on Oct 30 (no flagged status yet), then each (status, UTC time) in turn."""
    body = {
        "customer": {"id": f"c-{order_id}", "phone": "+79161110001", "name": "Анна", "sms_consent": True},
        "amount": "1500.00",
        "currency": "RUB",
        "placed_at": at("2026-10-30T09:00"),
        "statuses": {"general": "accepted", "delivery": "at_pickup_point", "payment": "invoice_issued"},
        "occurred_at": at("2026-10-30T09:00"),
    }
    assert (await client.put(f"/v1/orders/{order_id}", json=body)).status_code == 200
    for code, when in moves:
        answer = await client.post(f"/v1/orders/{order_id}/status", json={"code": code, "occurred_at": at(when)})
        assert answer.status_code == 200 and answer.json()["changes"][0]["outcome"] == "applied", answer.text


async def place_the_orders(demo: httpx.AsyncClient) -> None:
    # Flagged in the example: completed (general), delivered (delivery), paid (payment).
    await place(demo, "o-1", ("paid", "2026-11-02T10:00"), ("delivered", "2026-11-03T10:00"),
                ("completed", "2026-11-03T21:30"))  # fmt: skip  # 00:30 on Nov 4 in Moscow
    await place(demo, "o-2", ("paid", "2026-11-01T10:00"), ("shipped", "2026-11-02T12:00"),
                ("delivered", "2026-11-05T10:00"))  # fmt: skip  # paid before the period, delivered in it
    await place(demo, "o-3", ("paid", "2026-11-02T11:00"), ("in_progress", "2026-11-03T08:00"),
                ("completed", "2026-11-06T10:00"))  # fmt: skip  # from paid to completed: none flagged between
    await place(demo, "o-4", ("paid", "2026-11-08T20:59"))  # 23:59 on Nov 8 in Moscow: the period's last minute
    await place(demo, "o-5", ("paid", "2026-11-08T21:00"))  # midnight in Moscow: after the period


async def test_entries_per_day_count_every_day_of_the_period_in_the_time_zone_asked(client_for: Clients) -> None:
    demo = client_for("demo")
    await place_the_orders(demo)

    answer = await demo.get("/v1/analytics/entries-per-day", params=PERIOD)

    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["first_day"], report["last_day"], report["time_zone"]) == (
        "2026-11-02",
        "2026-11-08",
        "Europe/Moscow",
    )
    assert report["days"] == [f"2026-11-0{n}" for n in range(2, 9)]
    by_code = {s["code"]: (s["type"], s["per_day"], s["total"]) for s in report["statuses"]}
    assert [s["code"] for s in report["statuses"]] == ["completed", "delivered", "paid"]  # flagged only, by type
    assert by_code == {
        "completed": ("general", [0, 0, 1, 0, 1, 0, 0], 2),
        "delivered": ("delivery", [0, 1, 0, 1, 0, 0, 0], 2),
        "paid": ("payment", [2, 0, 0, 0, 0, 0, 1], 3),
    }
    in_utc = (await demo.get("/v1/analytics/entries-per-day", params=PERIOD | {"time_zone": "UTC"})).json()
    completed = next(s for s in in_utc["statuses"] if s["code"] == "completed")
    assert completed["per_day"] == [0, 1, 0, 0, 1, 0, 0]  # 21:30 UTC on Nov 3 is Nov 3 in UTC


async def test_transitions_go_to_the_next_flagged_status_of_any_type(client_for: Clients) -> None:
    demo = client_for("demo")
    await place_the_orders(demo)

    answer = await demo.get("/v1/analytics/transitions", params=PERIOD)

    assert answer.status_code == 200, answer.text
    moves = [(t["from_code"], t["to_code"], t["count"], round(t["share"], 4)) for t in answer.json()["transitions"]]
    assert moves == [
        ("delivered", "completed", 1, 1.0),
        ("paid", "delivered", 2, 0.6667),  # o-1, and o-2 that was paid before the period
        ("paid", "completed", 1, 0.3333),  # o-3: "in progress" between is not flagged
    ]
    names = {(t["from_name"], t["to_name"]) for t in answer.json()["transitions"]}
    assert ("Оплачен", "Доставлен") in names


async def test_a_partner_sees_only_its_own_orders(client_for: Clients) -> None:
    await place_the_orders(client_for("demo"))
    acme = client_for("acme")

    entries = (await acme.get("/v1/analytics/entries-per-day", params=PERIOD)).json()
    moves = (await acme.get("/v1/analytics/transitions", params=PERIOD)).json()

    assert [s["total"] for s in entries["statuses"]] == [0, 0, 0]
    assert all(n == 0 for s in entries["statuses"] for n in s["per_day"])
    assert moves["transitions"] == []


@pytest.mark.parametrize("path", ["/v1/analytics/entries-per-day", "/v1/analytics/transitions"])
@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"first_day": "2026-11-08", "last_day": "2026-11-02"}, "reversed_range", "last_day"),
        ({"first_day": "2026-01-01", "last_day": "2027-01-02"}, "range_too_long", "last_day"),  # 367 days
        ({"first_day": "2026-02-30", "last_day": "2026-03-02"}, "validation_failed", "first_day"),
        ({"first_day": "1969-12-31", "last_day": "1970-01-02"}, "validation_failed", "first_day"),
        ({"first_day": "2026-11-02", "last_day": "3000-01-01"}, "validation_failed", "last_day"),
        ({"first_day": "2026-11-02", "last_day": "2026-11-08", "time_zone": "Mars/Olympus"}, "validation_failed",
         "time_zone"),
        ({"first_day": "2026-11-02", "last_day": "2026-11-08", "time_zone": "../../etc/passwd"}, "validation_failed",
         "time_zone"),
        ({"last_day": "2026-11-08"}, "validation_failed", "first_day"),
    ],
)  # fmt: skip
async def test_a_period_that_cannot_be_reported_is_refused_naming_the_field(
    client_for: Clients, path: str, params: dict[str, str], code: str, field: str
) -> None:
    answer = await client_for("demo").get(path, params=params)

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == code
    assert [(e["location"], e["field"]) for e in problem["errors"]] == [("query", field)]


async def test_the_longest_period_is_taken(client_for: Clients) -> None:
    answer = await client_for("demo").get(
        "/v1/analytics/entries-per-day", params={"first_day": "2026-01-01", "last_day": "2027-01-01"}
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["days"]) == analytics.MAX_PERIOD_DAYS


# --- one indexed query per chart ----------------------------------------------------------------------------------


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database, Path(orders.__file__).parent / "migrations")
    pool = await create_pool(database)
    yield pool
    await pool.close()


class Recording:
    """A connection that remembers every statement it was given, to count them and to explain them."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append((sql, args))
        return list(await self.conn.fetch(sql, *args))


CODES = ["accepted", "agreed", "in_progress", "completed", "shipped", "delivered", "invoice_issued", "paid"]


async def test_each_chart_is_one_query_through_the_index_on_a_large_history(pool: asyncpg.Pool) -> None:
    """200,000 changes over 400 days, of two partners: a month's chart reads its partner's flagged entries of that
    month through `status_history_entries` (never a scan of the whole history), and each earlier flagged status
    through `status_history_by_order`."""
    await pool.execute(
        "INSERT INTO status_history (partner_id, order_id, type, outcome, from_code, to_code, to_name, sequence, "
        "occurred_at, event_id) "
        "SELECT CASE WHEN n % 2 = 1 THEN 'big' ELSE 'other' END, 'o-' || (n / 8), 'general', 'applied', NULL, "
        "($1::text[])[1 + n % 8], 'x', n % 8 + 1, "
        "timestamptz '2026-01-01' + (n * interval '173 seconds'), 'e-' || n FROM generate_series(1, 200000) n",
        CODES,
    )
    await pool.execute("ANALYZE status_history")
    period = analytics.Period(date(2026, 6, 1), date(2026, 6, 30), "Europe/Moscow")
    flagged = ["completed", "delivered", "paid"]

    async with pool.acquire() as conn:
        per_day, moves = Recording(conn), Recording(conn)
        counts = await analytics.entries_per_day(per_day, "big", flagged, period)  # type: ignore[arg-type]
        transitions = await analytics.transitions_between(moves, "big", flagged, period)  # type: ignore[arg-type]
        plans = [await _plan(conn, *statement) for statement in per_day.statements + moves.statements]

    assert len(per_day.statements) == len(moves.statements) == 1
    assert sum(counts["paid"]) > 0 and all(len(days) == 30 for days in counts.values())
    assert transitions[("completed", "delivered")] > 0
    for plan in plans:
        assert "status_history_entries" in plan and "Seq Scan" not in plan, plan
    assert "status_history_by_order" in plans[1], plans[1]


async def _plan(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> str:
    rows = await conn.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return json.dumps(json.loads(rows[0][0]))
