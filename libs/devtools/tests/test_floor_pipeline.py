"""The bench's floor pipeline keeps the guarantees it stands for: a redelivered event changes nothing and
produces nothing, and its records are as large as the platform's and carry its headers (real PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from devtools.floor_pipeline import SCHEMA, campaigns_hop, encoded, orders_hop, transaction

PREFIX = "floortest."
UPSERT = {
    "id": "event-1",
    "type": "order.upserted.v1",
    "partnerid": "p",
    "data": {"order_id": "o1", "statuses": {"general": "accepted", "delivery": "at_pickup_point", "payment": None}},
}


async def test_a_redelivered_event_is_claimed_once_and_produces_nothing_again(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(SCHEMA)
        first = await transaction(conn, PREFIX, orders_hop, [UPSERT, UPSERT], {})
        again = await transaction(conn, PREFIX, orders_hop, [UPSERT], {})
        assert [row[1] for row in first] == [f"{PREFIX}orders.status-changed.v1"] * 2  # two statuses set
        assert again == []
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2
        assert await conn.fetchval("SELECT count(*) FROM effects") == 2
    finally:
        await conn.close()


def test_records_are_padded_to_the_platforms_size_and_carry_its_headers() -> None:
    (item,) = campaigns_hop(PREFIX, shipped_change())[1]
    topic, _, value, headers = encoded(item, {item[0]: 900})
    assert topic == f"{PREFIX}notifier.send-sms.v1"
    assert 890 <= len(value) <= 900
    assert "отгружен" in json.loads(value)["data"]["text"]
    assert set(json.loads(headers)) == {"ce_type", "ce_id", "partnerid"}


def test_only_the_bench_campaigns_triggers_ask_for_an_sms() -> None:
    assert campaigns_hop(PREFIX, shipped_change("paid")) == ([], [])


def shipped_change(code: str = "shipped") -> dict[str, Any]:
    return {"id": "e", "partnerid": "p", "data": {"order_id": "o1", "to_status": {"code": code}}}
