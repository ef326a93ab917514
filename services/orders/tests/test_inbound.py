"""Upstream events on orders.inbound.v1 against real Kafka and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from aiokafka import ConsumerRecord

from contracts.envelope import decode
from contracts.orders import Customer, OrderStatusChanged
from contracts.statuses import StatusType
from devtools.pytest_plugin import read_topic, wait_until
from devtools.scenario import example_definitions, publish_definitions
from orders.settings import OrdersSettings
from servicekit.settings import ServiceSettings

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
Clients = Callable[..., httpx.AsyncClient]


async def records(bootstrap: str, topic: str, count: int, timeout_s: float = 20) -> list[ConsumerRecord[bytes, bytes]]:
    """Wait until `topic` holds `count` records; fail if it holds more."""
    found: list[ConsumerRecord[bytes, bytes]] = []

    async def enough() -> bool:
        nonlocal found
        found = await read_topic(bootstrap, topic)
        return len(found) >= count

    await wait_until(enough, timeout_s=timeout_s, what=f"{count} records on {topic}")
    assert len(found) == count, [r.value for r in found]
    return found


async def changes(settings: OrdersSettings, count: int) -> list[OrderStatusChanged]:
    found = await records(settings.kafka_bootstrap_servers, settings.topic_status_changed, count)
    events = [decode(r.value or b"", OrderStatusChanged) for r in found]
    return [e.data for e in sorted(events, key=lambda e: (e.data.order_id, e.data.sequence))]


async def dead_letters(settings: OrdersSettings, count: int, timeout_s: float = 20) -> dict[str, str]:
    """reason -> error of each dead-lettered record."""
    found = await records(settings.kafka_bootstrap_servers, settings.topic_inbound_dlq, count, timeout_s)
    pairs = [(dict(r.headers)["dlq-reason"].decode(), dict(r.headers)["dlq-error"].decode()) for r in found]
    return dict(pairs)


async def test_an_upserted_order_emits_one_change_per_type_with_snapshot_and_causation(
    upstream: Any, orders_settings: OrdersSettings, client_for: Clients
) -> None:
    sent = await upstream.upsert("o-1", general="accepted", delivery="at_pickup_point", payment="invoice_issued")
    events = await changes(orders_settings, 3)
    assert [(e.status_type, e.sequence, e.from_status) for e in events] == [
        (StatusType.GENERAL, 1, None),
        (StatusType.DELIVERY, 2, None),
        (StatusType.PAYMENT, 3, None),
    ]
    last = events[-1]
    assert last.to_status.name == "Счёт выставлен" and last.order.customer.name == "Анна"
    assert last.order.statuses.general is not None and last.order.statuses.general.code == "accepted"
    raw = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
    assert {decode(r.value or b"", OrderStatusChanged).causationid for r in raw} == {sent.id}
    assert {r.key for r in raw} == {b"demo:o-1"}

    order = (await client_for("demo").get("/v1/orders/o-1")).json()
    assert order["statuses"]["delivery"]["name"] == "В пункте выдачи"
    assert [h["outcome"] for h in order["history"]] == ["applied"] * 3


async def test_duplicates_same_status_and_stale_events_change_nothing(
    upstream: Any, orders_settings: OrdersSettings, client_for: Clients
) -> None:
    await upstream.upsert("o-2", delivery="at_pickup_point", seq=1)
    shipped = await upstream.report("o-2", "shipped", seq=5, at=T0 + timedelta(hours=2))
    await upstream.send(shipped)  # the same event again
    await upstream.report("o-2", "shipped", seq=6, at=T0 + timedelta(hours=3))  # the status it already has
    await upstream.report("o-2", "at_delivery_point", seq=4, at=T0 + timedelta(hours=4))  # older sequence: stale
    await upstream.report("o-2", "accepted", at=T0 - timedelta(days=1))  # general: first one, applied
    await upstream.report("o-2", "agreed", at=T0 - timedelta(days=2))  # older than 'accepted': stale by time
    events = await changes(orders_settings, 3)
    assert [(e.to_status.code, e.sequence) for e in events] == [("at_pickup_point", 1), ("shipped", 2), ("accepted", 3)]

    async def history_complete() -> bool:
        order = (await client_for("demo").get("/v1/orders/o-2")).json()
        return len(order["history"]) == 6

    await wait_until(history_complete, what="every processed event in the history")
    order = (await client_for("demo").get("/v1/orders/o-2")).json()
    outcomes = [(h["to_code"], h["outcome"]) for h in order["history"]]
    assert ("at_delivery_point", "stale") in outcomes and ("agreed", "stale") in outcomes
    assert ("shipped", "unchanged") in outcomes and len(outcomes) == 6  # the duplicate left no trace
    metrics = (await client_for("demo").get("/metrics")).text
    assert 'order_stale_events_total{type="delivery"}' in metrics


async def test_the_watermark_of_a_same_status_event_holds_in_later_batches(
    upstream: Any, orders_settings: OrdersSettings, client_for: Clients
) -> None:
    """A batch stores only the current statuses that changed; the same status again changes its watermark, so
    that row is stored too, and an event older than the watermark is stale in any later batch."""

    async def history(count: int) -> list[tuple[str, str]]:
        async def written() -> bool:
            return len((await client_for("demo").get("/v1/orders/o-w")).json().get("history", [])) >= count

        await wait_until(written, what=f"{count} history entries")
        order = (await client_for("demo").get("/v1/orders/o-w")).json()
        return [(h["to_code"], h["outcome"]) for h in order["history"]]

    await upstream.upsert("o-w", general="accepted", delivery="at_pickup_point", seq=1)
    await history(2)
    await upstream.report("o-w", "shipped", seq=5)
    await history(3)
    await upstream.report("o-w", "shipped", seq=7)  # the status it has, newer: the watermark moves to 7
    assert (await history(4))[-1] == ("shipped", "unchanged")
    await upstream.report("o-w", "at_delivery_point", seq=6)  # newer than the change, older than the watermark
    assert (await history(5))[-1] == ("at_delivery_point", "stale")
    order = (await client_for("demo").get("/v1/orders/o-w")).json()
    assert order["statuses"]["delivery"]["code"] == "shipped" and order["statuses"]["general"]["code"] == "accepted"
    assert [e.to_status.code for e in await changes(orders_settings, 3)] == ["accepted", "at_pickup_point", "shipped"]


async def test_rule_violations_and_bad_records_are_dead_lettered_while_others_flow(
    upstream: Any, orders_settings: OrdersSettings
) -> None:
    restricted = example_definitions("demo")
    for definition in restricted:  # 'delivered' is final; 'shipped' may only go to 'at_delivery_point'
        if definition.code in {"delivered", "shipped", "in_progress"}:
            allowed = {"delivered": [], "shipped": ["at_delivery_point"]}.get(definition.code)
            restricted[restricted.index(definition)] = definition.model_copy(
                update={"allowed_next": allowed, "archived": definition.code == "in_progress", "version": 2}
            )
    await publish_definitions(
        orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_definitions, restricted
    )
    await upstream.upsert("o-3", delivery="at_pickup_point")
    await wait_until(lambda: _has_changes(orders_settings, 1), what="the first change")

    await upstream.raw(b"{not json")
    await upstream.raw(b'{"specversion": "1.0", "id": "x", "type": "order.cancelled.v9"}')
    await upstream.raw(b"x" * (orders_settings.max_inbound_bytes + 1))
    await upstream.upsert("o-4", delivery="shipped")  # not the initial delivery status
    await upstream.report("o-3", "shipped", at=T0 + timedelta(hours=1))
    await upstream.report("o-3", "delivered", at=T0 + timedelta(hours=2))  # shipped -> delivered not allowed
    await upstream.report("o-3", "in_progress", at=T0 + timedelta(hours=3))  # archived
    wrong_key = (await upstream.report("o-5", "accepted")).to_bytes()
    await upstream.raw(wrong_key, key=b"acme:o-5")
    await upstream.report("o-3", "at_delivery_point", at=T0 + timedelta(hours=4))  # still flows

    reasons = await dead_letters(orders_settings, 7)
    assert set(reasons) == {
        "malformed_json", "unknown_event_type", "oversized", "not_initial_status",
        "transition_not_allowed", "archived_status", "key_mismatch",
    }  # fmt: skip
    assert "cannot move to 'delivered'" in reasons["transition_not_allowed"]
    events = await changes(orders_settings, 3)
    assert [e.to_status.code for e in events] == ["at_pickup_point", "shipped", "at_delivery_point"]


async def _has_changes(settings: OrdersSettings, count: int) -> bool:
    return len(await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed)) >= count


async def test_unknown_codes_retry_then_dead_letter_and_a_status_created_meanwhile_resolves(
    upstream: Any, orders_settings: OrdersSettings
) -> None:
    await upstream.upsert("o-6", general="accepted")
    await upstream.report("o-6", "returned", at=T0 + timedelta(hours=1))  # 'returned' is created just after
    await upstream.report("o-6", "teleported", at=T0 + timedelta(hours=2))  # never created
    await upstream.report("o-6", "paid", partner="acme", at=T0)  # an order acme does not have
    new_status = example_definitions("demo")[0].model_copy(
        update={"code": "returned", "name": "Возврат", "is_initial": False}
    )
    await publish_definitions(
        orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_definitions, [new_status]
    )

    events = await changes(orders_settings, 2)
    assert [e.to_status.code for e in events] == ["accepted", "returned"]
    reasons = await dead_letters(orders_settings, 2, timeout_s=30)
    assert set(reasons) == {"unknown_status", "unknown_order"}
    assert "after 3 retries" in reasons["unknown_status"]


async def test_a_late_upsert_leaves_the_newer_details_and_the_next_snapshot_carries_them(
    upstream: Any, orders_settings: OrdersSettings, client_for: Clients
) -> None:
    """Details follow the statuses' ordering rule: an upsert older than the applied one (by source_sequence, or by
    occurred_at without sequences) changes no customer, phone, consent or amount; its statuses are still judged
    per type, and every later snapshot carries the newer details."""
    newer = Customer(id="c-new", phone="+79990000000", name="Новое имя", sms_consent=False)
    older = Customer(id="c-old", phone="+79001111111", name="Старое имя", sms_consent=True)
    # By source sequence: the late upsert is later by its clock but older by its sequence.
    await upstream.upsert("o-seq", seq=5, at=T0, customer=newer, amount="2000", general="accepted")
    await upstream.upsert("o-seq", seq=3, at=T0 + timedelta(hours=1), customer=older, amount="1000",
                          payment="invoice_issued")  # fmt: skip
    await upstream.report("o-seq", "paid", seq=6, at=T0 + timedelta(hours=2))
    # Without sequences: by occurred_at.
    await upstream.upsert("o-time", at=T0 + timedelta(hours=2), customer=newer, amount="2000", general="accepted")
    await upstream.upsert("o-time", at=T0 + timedelta(hours=1), customer=older, amount="1000",
                          payment="invoice_issued")  # fmt: skip
    await upstream.report("o-time", "paid", at=T0 + timedelta(hours=3))

    events = await changes(orders_settings, 6)
    assert [(e.order_id, e.to_status.code) for e in events] == [
        (order_id, code) for order_id in ("o-seq", "o-time") for code in ("accepted", "invoice_issued", "paid")
    ]
    for event in events:  # the late upsert's own change too: its status was newer for its type
        assert (event.order.customer, event.order.amount) == (newer, Decimal("2000")), event

    demo = client_for("demo")
    for order_id, watermark in (
        ("o-seq", [T0.isoformat(), 5]),
        ("o-time", [(T0 + timedelta(hours=2)).isoformat(), None]),
    ):
        order = (await demo.get(f"/v1/orders/{order_id}")).json()
        assert order["customer"] == newer.model_dump(mode="json") and Decimal(order["amount"]) == 2000
        assert [order["details_watermark"]["occurred_at"], order["details_watermark"]["source_sequence"]] == watermark
        assert [(d["outcome"], d["fields"]) for d in order["details_history"]] == [
            ("created", ["customer.id", "customer.phone", "customer.name", "customer.sms_consent", "amount",
                         "currency", "placed_at"]),
            ("stale", ["customer.id", "customer.phone", "customer.name", "customer.sms_consent", "amount"]),
        ]  # fmt: skip
        assert order["details_history"][1]["occurred_at"] == (T0 + timedelta(hours=1)).isoformat()
    metrics = (await demo.get("/metrics")).text
    stale = [line for line in metrics.splitlines() if line.startswith("order_stale_details_total ")]
    assert stale and float(stale[0].split()[1]) >= 2  # the counter is per process: earlier tests may count too


async def test_nul_or_lone_surrogate_in_a_field_is_dead_lettered_as_invalid_payload_and_the_next_flows(
    upstream: Any, orders_settings: OrdersSettings
) -> None:
    """Such a string would fail in PostgreSQL or asyncpg (processing_failed); the contract refuses it first."""
    for order_id, bad in (("o-nul", "A\x00"), ("o-sur", "A\ud800")):
        document = {
            "specversion": "1.0", "id": f"evt-{order_id}", "source": "/shop", "type": "order.upserted.v1",
            "time": T0.isoformat(), "partnerid": "demo",
            "data": {"order_id": order_id, "customer": {"id": "c-1", "name": bad}, "amount": "1", "currency": "RUB",
                     "placed_at": T0.isoformat(), "occurred_at": T0.isoformat(), "statuses": {"general": "accepted"}},
        }  # fmt: skip
        await upstream.raw(json.dumps(document).encode(), key=f"demo:{order_id}".encode())
    await upstream.upsert("o-good", general="accepted")

    found = await records(orders_settings.kafka_bootstrap_servers, orders_settings.topic_inbound_dlq, 2)
    reasons = [(dict(r.headers)["dlq-reason"].decode(), dict(r.headers)["dlq-error"].decode()) for r in found]
    assert [reason for reason, _ in reasons] == ["invalid_payload", "invalid_payload"]
    assert all(error.startswith("data.customer.name:") for _, error in reasons), reasons
    assert [e.order_id for e in await changes(orders_settings, 1)] == ["o-good"]


def test_only_the_consumer_of_upstream_events_lingers_by_default() -> None:
    """Upstream producers send events one by one: orders gathers them; the platform's own topics arrive a relay's
    batch at a time, where a linger would only delay every hop (docs/architecture.md, consumers)."""
    assert OrdersSettings().batching.linger_ms == 25.0
    assert ServiceSettings().batching.linger_ms == 0.0
