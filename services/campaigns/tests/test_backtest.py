"""The backtest (POST /v1/campaigns/backtest, /v1/campaigns/{id}/backtest) against a real orders service: its history
written through the orders API, then moved into the past; real PostgreSQL and Kafka for both services."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from campaigns.settings import CampaignsSettings
from devtools.platform import free_port
from devtools.pytest_plugin import Infrastructure, fresh_database, read_topic, token_issuer
from orders.app import create_app as create_orders_app
from orders.settings import OrdersSettings

from .conftest import Clock

Client = Callable[..., httpx.AsyncClient]
# The past is laid out from this day (UTC midnight, five days ago); times are UTC, Moscow is 3 hours ahead.
D = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
DRAFT: dict[str, Any] = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name }}, заказ {{ order.id }} отгружен",
}


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
async def orders_service(infrastructure: Infrastructure, topic_prefix: str) -> AsyncIterator[tuple[str, str]]:
    """The orders service over real HTTP on a free port (campaigns calls it as it would in production): its URL
    and its database."""
    async with fresh_database(infrastructure) as database:
        settings = OrdersSettings(
            database_url=database,
            kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
            kafka_topic_prefix=topic_prefix,
            consumer_group=f"{topic_prefix}orders",
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_orders_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
            assert not serving.done(), "orders did not start"
        try:
            yield f"http://127.0.0.1:{port}", database
        finally:
            server.should_exit = True
            await serving


@pytest.fixture
def campaigns_settings(
    infrastructure: Infrastructure, database: str, topic_prefix: str, orders_service: tuple[str, str]
) -> CampaignsSettings:
    return CampaignsSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        consumer_group=f"{topic_prefix}campaigns",
        sms_events_consumer_group=f"{topic_prefix}campaigns.sms-events",
        orders_url=orders_service[0],
    )


@pytest.fixture
async def orders(orders_service: tuple[str, str], campaigns_app: FastAPI) -> AsyncIterator[Client]:
    """Clients of the orders API (started after campaigns published the example statuses), by partner."""
    clients: list[httpx.AsyncClient] = []

    def make(partner: str = "demo") -> httpx.AsyncClient:
        token = token_issuer().token(partner, ("read", "write"))
        client = httpx.AsyncClient(base_url=orders_service[0], headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def order(customer: str, phone: str | None = "+7 916 123-45-67") -> dict[str, Any]:
    return {
        "customer": {"id": customer, "phone": phone, "name": "Анна", "sms_consent": True},
        "amount": "1490.00",
        "currency": "RUB",
        "placed_at": D.isoformat(),
        "statuses": {"delivery": "at_pickup_point", "payment": "invoice_issued"},
    }


async def set_status(client: httpx.AsyncClient, order_id: str, code: str) -> None:
    answer = await client.post(f"/v1/orders/{order_id}/status", json={"code": code})
    assert answer.status_code == 200, answer.text


async def moved_to(database: str, order_id: str, to_code: str, when: datetime) -> None:
    """The order's changes into `to_code` happened at `when` (the newest such change, when several)."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "UPDATE status_history SET recorded_at = $3, occurred_at = $3 WHERE id = (SELECT max(id) FROM "
            "status_history WHERE order_id = $1 AND to_code = $2)",
            order_id,
            to_code,
            when,
        )
    finally:
        await conn.close()


@pytest.fixture
async def the_past(orders: Client, orders_service: tuple[str, str], demo: httpx.AsyncClient) -> None:
    """Five days ago and since, with a frequency cap of one marketing SMS a day and the default quiet hours."""
    database = orders_service[1]
    shop, other = orders("demo"), orders("acme")
    capped = await demo.put("/v1/settings", json={"frequency_cap": {"max_messages": 1, "window_hours": 24}})
    assert capped.status_code == 200, capped.text
    for order_id, body in (
        ("o-1", order("c-1")),
        ("o-2", order("c-2")),  # shipped unpaid, paid afterwards
        ("o-3", order("c-3")),
        ("o-4", order("c-1")),  # c-1 again, the same day
        ("o-5", order("c-5", phone=None)),
        ("o-old", order("c-6")),
    ):
        assert (await shop.put(f"/v1/orders/{order_id}", json=body)).status_code == 200
        if order_id != "o-2":
            await set_status(shop, order_id, "paid")
        await set_status(shop, order_id, "shipped")
    await set_status(shop, "o-2", "paid")
    await set_status(shop, "o-1", "at_delivery_point")
    await set_status(shop, "o-1", "shipped")  # a second time: once per order
    assert (await other.put("/v1/orders/a-1", json=order("c-1"))).status_code == 200
    await set_status(other, "a-1", "shipped")  # another partner's
    for order_id, when in (
        ("o-1", D + timedelta(days=3)),  # the second shipping (the newest row)
        ("o-2", D + timedelta(hours=10)),
        ("o-3", D + timedelta(days=1, hours=20)),  # 23:00 in Moscow: held until 09:00
        ("o-4", D + timedelta(hours=15)),
        ("o-5", D + timedelta(hours=16)),
        ("o-old", D - timedelta(days=40)),
    ):
        await moved_to(database, order_id, "shipped", when)
    conn = await asyncpg.connect(database)
    try:  # o-1's first shipping: the oldest of its two
        await conn.execute(
            "UPDATE status_history SET recorded_at = $1 WHERE id = (SELECT min(id) FROM status_history "
            "WHERE order_id = 'o-1' AND to_code = 'shipped')",
            D + timedelta(hours=9),
        )
    finally:
        await conn.close()


async def streamed(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.post(path, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in answer.text.splitlines()]


async def test_a_draft_replays_the_partners_past_as_it_was(
    the_past: None, demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    lines = await streamed(demo, "/v1/campaigns/backtest", {"definition": DRAFT, "days": 30, "price_per_segment": 2.5})

    assert lines[-2] == {"progress": {"processed": 6, "percent": 100.0}}
    result = lines[-1]["result"]
    counts = {k: result[k] for k in ("changes_read", "triggered", "filtered_out", "outside_reentry", "capped", "sms")}
    assert counts == {
        "changes_read": 6, "triggered": 6, "filtered_out": 2, "outside_reentry": 1, "capped": 1, "sms": 2
    }  # fmt: skip
    # o-2 was unpaid when it shipped (it is paid now); o-5 has no phone.
    assert [(r["code"], r["changes"]) for r in result["filtered_out_by_reason"]] == [
        ("payment_status", 1),
        ("no_phone", 1),
    ] or [(r["code"], r["changes"]) for r in result["filtered_out_by_reason"]] == [
        ("no_phone", 1),
        ("payment_status", 1),
    ]
    assert "invoice_issued" in next(
        r["example"] for r in result["filtered_out_by_reason"] if r["code"] == "payment_status"
    )
    assert result["held_by_quiet_hours"] == 1 and result["segments"] == 2 and result["cost"] == "5.0"
    sent_days = {d["day"]: d["sms"] for d in result["per_day"] if d["sms"]}
    assert sent_days == {D.date().isoformat(): 1, (D + timedelta(days=2)).date().isoformat(): 1}
    assert len(result["per_day"]) == 31  # every day of the period, none sent on most
    samples = {s["order_id"]: s for s in result["samples"]}
    assert set(samples) == {"o-1", "o-3"}
    assert samples["o-1"]["text"] == "Анна, заказ o-1 отгружен" and samples["o-1"]["phone"] == "+79161234567"
    assert samples["o-3"]["sent_at"] == (D + timedelta(days=2, hours=6)).isoformat().replace("+00:00", "Z")

    # Nothing stored, nothing sent.
    conn = await asyncpg.connect(campaigns_settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM evaluations") == 0
    finally:
        await conn.close()
    assert await read_topic(campaigns_settings.kafka_bootstrap_servers, campaigns_settings.topic_send_sms) == []


async def test_a_change_to_a_stored_campaign(the_past: None, demo: httpx.AsyncClient) -> None:
    created = await demo.post("/v1/campaigns", json=DRAFT)
    campaign_id = created.json()["id"]
    as_stored = (await streamed(demo, f"/v1/campaigns/{campaign_id}/backtest", {"days": 30}))[-1]["result"]
    assert as_stored["sms"] == 2
    unfiltered = DRAFT | {"filters": []}
    changed = await streamed(demo, f"/v1/campaigns/{campaign_id}/backtest", {"definition": unfiltered, "days": 7})
    assert changed[-1]["result"]["sms"] == 3 and changed[-1]["result"]["filtered_out"] == 1  # o-2 now; o-5 no phone


async def test_refusals_are_problems(the_past: None, demo: httpx.AsyncClient, client_for: Client) -> None:
    for days in (0, 91):
        refused = await demo.post("/v1/campaigns/backtest", json={"definition": DRAFT, "days": days})
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] == "days"
    unknown = DRAFT | {"trigger": {"status_type": "delivery", "to": "teleported"}}
    refused = await demo.post("/v1/campaigns/backtest", json={"definition": unknown})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"].startswith("definition.trigger")
    campaigns_only = client_for("demo", ("campaigns:read",))
    refused = await campaigns_only.post("/v1/campaigns/backtest", json={"definition": DRAFT})
    assert refused.status_code == 403 and refused.json()["scope"] == "orders:read"
    missing = await demo.post("/v1/campaigns/nope/backtest", json={})
    assert missing.status_code == 404
    send = {"kind": "send_sms", "template": DRAFT["template"]}
    journey = {k: v for k, v in DRAFT.items() if k != "template"} | {
        "steps": [{"kind": "wait_duration", "minutes": 60}, send]
    }
    refused = await demo.post("/v1/campaigns/backtest", json={"definition": journey})
    assert (
        refused.status_code == 422 and refused.json()["code"] == "journey_not_replayable"
    )  # not entries sending nothing
    assert refused.json()["errors"][0]["field"] == "definition.steps"


# $1 orders of partner demo, each shipped (and paid) a minute apart over the last days, as orders stores them.
MANY_SHIPPED = """
WITH o AS (
    INSERT INTO orders (partner_id, order_id, customer_id, customer_phone, customer_name, sms_consent, amount,
                        currency, placed_at)
    SELECT 'demo', 'many-' || n, 'cust-' || n, '+7916' || lpad(n::text, 7, '0'), 'Анна', true, 1490, 'RUB',
           now() - interval '5 days' + n * interval '1 second'
    FROM generate_series(1, $1::int) AS n RETURNING order_id, placed_at
)
INSERT INTO status_history (partner_id, order_id, type, outcome, from_code, from_name, to_code, to_name, sequence,
                            occurred_at, recorded_at, event_id, delivery_code, delivery_name, payment_code,
                            payment_name)
SELECT 'demo', order_id, t.type, 'applied', t.from_code, t.from_code, t.to_code, t.to_code, t.seq, placed_at, placed_at,
       gen_random_uuid()::text, t.delivery, t.delivery, 'paid', 'paid'
FROM o, (VALUES ('payment', NULL, 'paid', 1, NULL), ('delivery', NULL, 'at_pickup_point', 2, 'at_pickup_point'),
                ('delivery', 'at_pickup_point', 'shipped', 3, 'shipped')) AS t(type, from_code, to_code, seq, delivery)
"""


async def active_backtests(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE '%COPY%o.customer_id, h.event_id, h.recorded_at%' AND state <> 'idle'"
            )
        )
    finally:
        await conn.close()


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` (already started) over real HTTP: a client that goes away is a disconnect the app hears."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_closing_the_stream_stops_the_work(orders_service: tuple[str, str], campaigns_app: FastAPI) -> None:
    database = orders_service[1]
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(MANY_SHIPPED, 60_000)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    progress: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token_issuer().token('demo', ('read',))}"}
    async with served(campaigns_app) as url, httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        body = {"definition": DRAFT, "days": 7}
        async with client.stream("POST", "/v1/campaigns/backtest", json=body) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                progress.append(json.loads(line))
                assert await active_backtests(database) == 1  # the query is under way (this check sees it)
                break  # the editor's Cancel: the connection is closed
        assert "progress" in progress[0] and 0 < progress[0]["progress"]["processed"] < 60_000
        for _ in range(20):  # the orders query ends with the stream, long before it would have finished
            if await active_backtests(database) == 0:
                break
            await asyncio.sleep(0.1)
        assert await active_backtests(database) == 0


async def test_the_decisions_run_in_a_worker_of_lower_priority(
    the_past: None, demo: httpx.AsyncClient, campaigns_app: FastAPI
) -> None:
    """The live path comes first: the backtest's CPU is a niced process's, not the service's event loop's."""
    lines = await streamed(demo, "/v1/campaigns/backtest", {"definition": DRAFT, "days": 30})
    assert lines[-1]["result"]["sms"] == 2
    workers = [p for e in campaigns_app.state.backtest_worker._executors if e for p in e._processes.values()]
    assert len(workers) == campaigns_app.state.backtest_worker.count == min(os.cpu_count() or 1, 4)
    for worker in workers:  # each deciding a share of the customers
        assert worker.pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE  # only CPU nothing else wants
