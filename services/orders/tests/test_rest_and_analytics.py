"""The orders REST API and analytics against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devtools.pytest_plugin import read_topic, wait_until
from devtools.scenario import example_definitions, publish_definitions
from orders.settings import OrdersSettings
from servicekit.pagination import encode_cursor

Clients = Callable[..., httpx.AsyncClient]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order_body(**statuses: str) -> dict[str, Any]:
    return {
        "customer": {"id": "c-1", "phone": "+7 900 123-45-67", "name": "Иван", "sms_consent": True},
        "amount": "2500.50",
        "currency": "RUB",
        "placed_at": T0.isoformat(),
        "statuses": statuses,
        "occurred_at": T0.isoformat(),
    }


async def test_put_and_set_status_with_idempotency_keys(client_for: Clients, orders_settings: OrdersSettings) -> None:
    demo = client_for("demo")
    created = await demo.put("/v1/orders/o-1", json=order_body(general="accepted", payment="invoice_issued"))
    assert created.status_code == 200, created.text
    assert [c["to"] for c in created.json()["changes"]] == ["accepted", "invoice_issued"]
    assert created.json()["order"]["amount"] == "2500.500000" or created.json()["order"]["amount"].startswith("2500.5")

    body = {"code": "paid", "comment": "paid at the till"}
    first = await demo.post("/v1/orders/o-1/status", json=body, headers={"Idempotency-Key": "pay-1"})
    again = await demo.post("/v1/orders/o-1/status", json=body, headers={"Idempotency-Key": "pay-1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["changes"][0]["outcome"] == "applied"
    racing = await asyncio.gather(
        *(
            demo.post("/v1/orders/o-1/status", json={"code": "agreed"}, headers={"Idempotency-Key": "race"})
            for _ in range(3)
        )
    )
    assert {r.status_code for r in racing} == {200} and len({r.text for r in racing}) == 1
    other = await demo.post("/v1/orders/o-1/status", json={"code": "agreed"}, headers={"Idempotency-Key": "pay-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]

    async def every_event() -> bool:
        found = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
        return len(found) == 4  # created (2), paid, agreed: the repeated and racing requests emit nothing

    await wait_until(every_event, what="four OrderStatusChanged (the repeats emit nothing)")
    await asyncio.sleep(0.5)
    assert await every_event()
    order = (await demo.get("/v1/orders/o-1")).json()
    assert order["statuses"]["payment"] == {**order["statuses"]["payment"], "code": "paid", "name": "Оплачен"}
    assert next(h for h in order["history"] if h["to_code"] == "paid")["comment"] == "paid at the till"


async def test_rest_rule_violations_are_specific_422s_and_404s(client_for: Clients) -> None:
    demo = client_for("demo")
    not_initial = await demo.put("/v1/orders/o-2", json=order_body(delivery="shipped"))
    assert not_initial.status_code == 422
    assert not_initial.json()["errors"][0]["type"] == "not_initial_status"
    assert "at_pickup_point" in not_initial.json()["errors"][0]["message"]
    wrong_type = await demo.put("/v1/orders/o-2", json=order_body(delivery="paid"))
    assert wrong_type.json()["errors"][0]["type"] == "wrong_status_type"
    unknown = await demo.post("/v1/orders/nope/status", json={"code": "paid"})
    assert unknown.status_code == 404
    await demo.put("/v1/orders/o-2", json=order_body(general="accepted"))
    bad_code = await demo.post("/v1/orders/o-2/status", json={"code": "teleported"})
    assert bad_code.status_code == 422 and bad_code.json()["errors"][0]["type"] == "unknown_status"
    for refusal in (not_initial, unknown, bad_code):  # one error model: RFC 9457 problem details
        assert refusal.headers["content-type"] == "application/problem+json"
        assert refusal.json()["status"] == refusal.status_code and refusal.json()["code"]
    assert unknown.json()["code"] == "unknown_order" and bad_code.json()["code"] == "unknown_status"
    keyed = [
        await demo.post("/v1/orders/o-2/status", json={"code": "teleported"}, headers={"Idempotency-Key": "k-bad"})
        for _ in range(2)
    ]  # a refusal is stored and repeated as the problem it was
    assert [(r.status_code, r.headers["content-type"]) for r in keyed] == [(422, "application/problem+json")] * 2
    assert keyed[0].json() == keyed[1].json()
    for token in ("not-a-cursor", encode_cursor("yesterday", "o-1")):  # not base64; base64 of a position not a time
        cursor = await demo.get("/v1/orders", params={"cursor": token})
        assert cursor.status_code == 422 and cursor.json()["errors"][0]["field"] == "cursor"
    malformed = await demo.post("/v1/orders/o-2/status", json={"code": "Paid!"})
    assert malformed.status_code == 422
    extra = await demo.put("/v1/orders/o-2", json={**order_body(), "colour": "red"})
    assert extra.status_code == 422
    assert (
        await demo.post("/v1/orders/o-2/status", content=b"x", headers={"Content-Type": "text/plain"})
    ).status_code == 415


async def test_partners_are_isolated(client_for: Clients) -> None:
    demo, acme = client_for("demo"), client_for("acme")
    await demo.put("/v1/orders/o-3", json=order_body(general="accepted"))
    assert (await acme.get("/v1/orders/o-3")).status_code == 404
    assert (await acme.post("/v1/orders/o-3/status", json={"code": "agreed"})).status_code == 404
    assert (await acme.get("/v1/orders")).json()["items"] == []
    assert (
        await client_for("demo", ("read",)).post("/v1/orders/o-3/status", json={"code": "agreed"})
    ).status_code == 403


async def _every_page(client: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    """The order ids of every page of the list, following `next_cursor`."""
    ids, cursor = [], None
    while True:
        page = (await client.get("/v1/orders", params={**params, **({"cursor": cursor} if cursor else {})})).json()
        ids += [o["order_id"] for o in page["items"]]
        if not (cursor := page["next_cursor"]):
            return ids


async def test_list_filters_and_cursor_pages(client_for: Clients) -> None:
    demo = client_for("demo")
    for n in range(5):
        body = order_body(general="accepted", payment="invoice_issued")
        body["customer"]["id"] = f"c-{n % 2}"
        assert (await demo.put(f"/v1/orders/o-{n}", json=body)).status_code == 200
        if n % 2:
            assert (await demo.post(f"/v1/orders/o-{n}/status", json={"code": "paid"})).status_code == 200
    oldest_first = await _every_page(demo, {"limit": 2})
    assert sorted(oldest_first) == [f"o-{n}" for n in range(5)] and len(oldest_first) == 5
    assert await _every_page(demo, {"limit": 2, "newest_first": True}) == oldest_first[::-1]
    listed = (await demo.get("/v1/orders")).json()["items"]
    times = [datetime.fromisoformat(o["updated_at"]) for o in listed]
    assert times == sorted(times) and all(t <= datetime.now(UTC) for t in times)
    newest = (await demo.get("/v1/orders", params={"newest_first": True})).json()["items"]
    assert [o["order_id"] for o in newest] == [o["order_id"] for o in reversed(listed)]
    paid = (await demo.get("/v1/orders", params={"status_type": "payment", "code": "paid"})).json()["items"]
    assert sorted(o["order_id"] for o in paid) == ["o-1", "o-3"]
    by_customer = (await demo.get("/v1/orders", params={"customer_id": "c-0"})).json()["items"]
    assert sorted(o["order_id"] for o in by_customer) == ["o-0", "o-2", "o-4"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await demo.get("/v1/orders", params={"updated_from": future})).json()["items"] == []


async def test_analytics_count_only_flagged_statuses_and_follow_flag_changes(
    client_for: Clients, orders_settings: OrdersSettings
) -> None:
    demo = client_for("demo")
    for n, payment in enumerate(["invoice_issued", "awaiting_payment", "paid"]):
        body = order_body(general="accepted", payment="invoice_issued")
        body["customer"]["id"] = f"c-{n}"
        await demo.put(f"/v1/orders/o-{n}", json=body)
        if payment != "invoice_issued":
            at = (T0 + timedelta(hours=n)).isoformat()
            await demo.post(f"/v1/orders/o-{n}/status", json={"code": payment, "occurred_at": at})
    counts = (await demo.get("/v1/analytics/status-counts", params={"type": "payment"})).json()
    assert counts["statuses"] == [{"code": "paid", "name": "Оплачен", "current": 1, "entered": 1}]

    refused = await demo.get("/v1/analytics/time-in-status", params={"code": "invoice_issued"})
    assert refused.status_code == 422 and "not included in analytics" in refused.json()["detail"]
    flagged = [
        d.model_copy(update={"include_in_analytics": True, "version": 2})
        for d in example_definitions("demo")
        if d.code == "invoice_issued"
    ]
    await publish_definitions(
        orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_definitions, flagged
    )

    async def flag_seen() -> bool:
        return (await demo.get("/v1/analytics/time-in-status", params={"code": "invoice_issued"})).status_code == 200

    await wait_until(flag_seen, what="the flag change to take effect")
    stays = (await demo.get("/v1/analytics/time-in-status", params={"code": "invoice_issued"})).json()
    assert stays["completed_stays"] == 2
    assert stays["median_seconds"] is not None and stays["p90_seconds"] >= stays["median_seconds"]

    window = {
        "status": "paid",
        "from": (T0 - timedelta(days=1)).isoformat(),
        "to": (T0 + timedelta(days=1)).isoformat(),
    }
    segment = (await demo.get("/v1/segments/customers", params=window)).json()
    assert [c["customer_id"] for c in segment["items"]] == ["c-2"]
    assert (await demo.get("/v1/segments/customers", params={"status": "agreed"})).status_code == 422


async def test_a_status_reported_late_keeps_its_upstream_time_and_analytics_use_it(
    upstream: Any, client_for: Clients
) -> None:
    """Every event here arrives long after it happened (T0 is weeks ago): the current status and the history show
    both when it happened upstream and when orders applied it, and analytics count and measure by the former."""
    paid_at, refunded_at = T0 + timedelta(hours=1), T0 + timedelta(hours=4)
    await upstream.upsert("o-late", at=T0, general="accepted", payment="invoice_issued")
    await upstream.report("o-late", "paid", at=paid_at)
    await upstream.report("o-late", "awaiting_payment", at=refunded_at)  # leaves 'paid' after 3 hours upstream
    await upstream.report("o-late", "paid", at=T0 + timedelta(hours=5))
    demo = client_for("demo")

    async def all_applied() -> bool:
        order = (await demo.get("/v1/orders/o-late")).json()
        return len(order.get("history", [])) == 5

    await wait_until(all_applied, what="the five changes of o-late")
    order = (await demo.get("/v1/orders/o-late")).json()
    payment = order["statuses"]["payment"]
    assert payment["since"] == payment.get("occurred_at") == (T0 + timedelta(hours=5)).isoformat()
    assert datetime.fromisoformat(payment["recorded_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert order["statuses"]["general"]["occurred_at"] == T0.isoformat()
    entered_paid = [h for h in order["history"] if h["to_code"] == "paid"]
    assert [h["occurred_at"] for h in entered_paid] == [paid_at.isoformat(), (T0 + timedelta(hours=5)).isoformat()]
    assert all(h["recorded_at"] > h["occurred_at"] for h in order["history"])

    listed = (await demo.get("/v1/orders", params={"status_type": "payment", "code": "paid"})).json()["items"]
    assert [o["statuses"]["payment"]["occurred_at"] for o in listed] == [payment["occurred_at"]]
    stays = (await demo.get("/v1/analytics/time-in-status", params={"code": "paid"})).json()
    assert (stays["completed_stays"], stays["median_seconds"]) == (1, 3 * 3600)
    window = {"type": "payment", "from": paid_at.isoformat(), "to": (paid_at + timedelta(minutes=1)).isoformat()}
    counts = (await demo.get("/v1/analytics/status-counts", params=window)).json()["statuses"]
    assert {"code": "paid", "name": "Оплачен", "current": 1, "entered": 1} in counts
    window = {"status": "paid", "from": paid_at.isoformat(), "to": (paid_at + timedelta(minutes=1)).isoformat()}
    segment = (await demo.get("/v1/segments/customers", params=window)).json()["items"]
    assert [(c["customer_id"], datetime.fromisoformat(c["last_entered_at"])) for c in segment] == [
        ("c-o-late", paid_at)
    ]


async def test_a_put_older_than_the_stored_details_answers_stale_and_changes_nothing(client_for: Clients) -> None:
    demo = client_for("demo")
    created = await demo.put("/v1/orders/o-put", json=order_body(general="accepted"))
    assert created.json()["details"]["outcome"] == "created"
    late = order_body(payment="invoice_issued")
    late["occurred_at"] = (T0 - timedelta(hours=1)).isoformat()
    late["customer"]["phone"], late["amount"] = "+7 999 000-00-00", "1.00"
    answer = (await demo.put("/v1/orders/o-put", json=late)).json()
    assert answer["details"] == {"outcome": "stale", "fields": ["customer.phone", "amount"]}
    assert [(c["to"], c["outcome"]) for c in answer["changes"]] == [("invoice_issued", "applied")]  # its own type
    assert answer["order"]["customer"]["phone"] == "+7 900 123-45-67" and answer["order"]["amount"] == "2500.50"
    newer = order_body()
    newer["customer"]["sms_consent"] = False
    assert (await demo.put("/v1/orders/o-put", json=newer)).json()["details"] == {
        "outcome": "updated",
        "fields": ["customer.sms_consent"],
    }
    order = (await demo.get("/v1/orders/o-put")).json()
    assert [d["outcome"] for d in order["details_history"]] == ["created", "stale", "updated"]
    assert order["details_watermark"] == {"occurred_at": T0.isoformat(), "source_sequence": None}
