"""Many writes of one order at once, over REST and Kafka, on real PostgreSQL and Kafka (docs/concurrency.md):
never a 5xx, one creation, one event per change, and an Idempotency-Key's first answer for every repeat."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from contracts.envelope import decode
from contracts.orders import OrderStatusChanged
from devtools.pytest_plugin import read_topic, wait_until
from orders.settings import OrdersSettings

Clients = Callable[..., httpx.AsyncClient]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
N = 20


def order_body(**statuses: str) -> dict[str, Any]:
    return {
        "customer": {"id": "c-1", "phone": "+79001234567", "name": "Иван", "sms_consent": True},
        "amount": "100.00",
        "currency": "RUB",
        "placed_at": T0.isoformat(),
        "statuses": statuses,
        "occurred_at": T0.isoformat(),
    }


async def _changes(settings: OrdersSettings, order_id: str) -> list[OrderStatusChanged]:
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed)
    changes = [decode(r.value, OrderStatusChanged).data for r in records]
    return [c for c in changes if c.order_id == order_id]


async def _settled(settings: OrdersSettings, order_id: str, expected: int) -> list[OrderStatusChanged]:
    """The order's events once `expected` of them are out, and a moment later (none more may follow)."""

    async def out() -> bool:
        return len(await _changes(settings, order_id)) >= expected

    await wait_until(out, what=f"{expected} events of {order_id}")
    await asyncio.sleep(0.5)
    return await _changes(settings, order_id)


def _assert_no_server_error(answers: list[httpx.Response]) -> None:
    assert not [a.text for a in answers if a.status_code >= 500]
    for answer in answers:
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 409:
            assert answer.json()["code"] == "concurrent_change" and answer.headers["Retry-After"], answer.text


async def test_concurrent_first_writes_of_a_new_order_create_it_once(
    client_for: Clients, orders_settings: OrdersSettings
) -> None:
    demo = client_for("demo")
    body = order_body(general="accepted", payment="invoice_issued")
    answers = await asyncio.gather(*(demo.put("/v1/orders/new-1", json=body) for _ in range(N)))
    _assert_no_server_error(answers)
    done = [a.json() for a in answers if a.status_code == 200]
    assert [d["details"]["outcome"] for d in done].count("created") == 1
    applied = [c for d in done for c in d["changes"] if c["outcome"] == "applied"]
    assert sorted((c["type"], c["sequence"]) for c in applied) == [("general", 1), ("payment", 2)]

    history = (await demo.get("/v1/orders/new-1")).json()["history"]
    assert Counter(h["outcome"] for h in history)["applied"] == 2
    events = await _settled(orders_settings, "new-1", 2)
    assert sorted((e.status_type, e.sequence) for e in events) == [("general", 1), ("payment", 2)]


async def test_a_kafka_upsert_racing_rest_writes_of_the_same_new_orders_creates_each_once(
    client_for: Clients, orders_settings: OrdersSettings, upstream: Any
) -> None:
    demo = client_for("demo")
    ids = [f"race-{n}" for n in range(10)]
    body = order_body(general="accepted")
    rest = [demo.put(f"/v1/orders/{order_id}", json=body) for order_id in ids for _ in range(3)]
    kafka = [upstream.upsert(order_id, general="accepted", at=T0) for order_id in ids]
    answers = await asyncio.gather(*rest, *kafka)
    _assert_no_server_error([a for a in answers if isinstance(a, httpx.Response)])

    async def every_order_seen() -> bool:
        found = [(await demo.get(f"/v1/orders/{order_id}")).status_code for order_id in ids]
        return found == [200] * len(ids)

    await wait_until(every_order_seen, what="every order")
    records = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
    await asyncio.sleep(1)  # the Kafka upserts applied after the REST ones change nothing: no event may follow
    records = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
    per_order = Counter(decode(r.value, OrderStatusChanged).data.order_id for r in records)
    assert per_order == dict.fromkeys(ids, 1)
    for order_id in ids:
        history = (await demo.get(f"/v1/orders/{order_id}")).json()["history"]
        assert [h["sequence"] for h in history if h["outcome"] == "applied"] == [1], order_id


async def test_one_idempotency_key_fifty_times_at_once_applies_once_and_answers_alike(
    client_for: Clients, orders_settings: OrdersSettings
) -> None:
    demo = client_for("demo")
    assert (await demo.put("/v1/orders/key-1", json=order_body(payment="invoice_issued"))).status_code == 200
    post = {"code": "paid"}
    headers = {"Idempotency-Key": "pay-key-1"}
    answers = await asyncio.gather(
        *(demo.post("/v1/orders/key-1/status", json=post, headers=headers) for _ in range(50))
    )
    assert not [a.text for a in answers if a.status_code not in (200, 409)]
    busy = [a for a in answers if a.status_code == 409]
    assert all(a.json()["code"] == "idempotency_key_in_use" and a.headers["Retry-After"] for a in busy)
    done = [a.json() for a in answers if a.status_code == 200]
    assert done and all(d == done[0] for d in done)
    assert [(c["outcome"], c["to"]) for c in done[0]["changes"]] == [("applied", "paid")]
    replay = await demo.post("/v1/orders/key-1/status", json=post, headers=headers)
    assert replay.status_code == 200 and replay.json() == done[0]

    events = await _settled(orders_settings, "key-1", 2)
    assert [(e.status_type, e.to_status.code) for e in events] == [("payment", "invoice_issued"), ("payment", "paid")]


async def test_concurrent_status_changes_of_one_order_apply_one_after_another(
    client_for: Clients, orders_settings: OrdersSettings
) -> None:
    """Every request is applied in some order, each against the state the one before left; the events are the
    applied changes, one each, with consecutive sequence numbers, and the last one is the order's status."""
    demo = client_for("demo")
    assert (await demo.put("/v1/orders/seq-1", json=order_body(general="accepted"))).status_code == 200
    codes = ["agreed", "in_progress", "completed", "accepted"] * 5
    answers = await asyncio.gather(*(demo.post("/v1/orders/seq-1/status", json={"code": c}) for c in codes))
    assert not [a.text for a in answers if a.status_code >= 500]
    applied = sum(c["outcome"] == "applied" for a in answers if a.status_code == 200 for c in a.json()["changes"])

    events = await _settled(orders_settings, "seq-1", 1 + applied)
    assert [e.sequence for e in events] == list(range(1, 2 + applied))
    assert all(
        e.from_status and e.from_status.code == before.to_status.code for before, e in itertools.pairwise(events)
    )
    order = (await demo.get("/v1/orders/seq-1")).json()
    assert order["statuses"]["general"]["code"] == events[-1].to_status.code
