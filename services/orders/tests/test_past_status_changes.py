"""GET /v1/status-changes: a partner's past changes into some statuses, each with the order as it was then, one
array a line (contracts.past_changes), each of which reads back into the validated `OrderStatusChanged`; as TSV
(COPY's text format), the same items."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from contracts.past_changes import FIELDS, TSV, PastChange, read_past_change, read_past_change_tsv

Clients = Callable[..., httpx.AsyncClient]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order_body(customer: str, **statuses: str) -> dict[str, Any]:
    return {
        "customer": {"id": customer, "phone": "+7 900 123-45-67", "name": "Иван", "sms_consent": True},
        "amount": "2500.50",
        "currency": "RUB",
        "placed_at": T0.isoformat(),
        "statuses": statuses,
        "occurred_at": T0.isoformat(),
    }


def period(**extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"since": (now - timedelta(hours=1)).isoformat(), "until": (now + timedelta(hours=1)).isoformat()} | extra


async def lines(client: httpx.AsyncClient, params: dict[str, Any]) -> list[PastChange]:
    """The changes as NDJSON, checked against the same changes as TSV."""
    answer = await client.get("/v1/status-changes", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    found = [read_past_change(line) for line in answer.content.splitlines()]
    as_tsv = await client.get("/v1/status-changes", params=params, headers={"accept": f"{TSV}, */*;q=0.1"})
    assert as_tsv.status_code == 200 and as_tsv.headers["content-type"].startswith(TSV)
    tsv = [read_past_change_tsv(line) for line in as_tsv.content.split(b"\n")[:-1]]  # (a line may hold \r)
    assert [(t.event_id, t.recorded_at, t.event()) for t in tsv] == [
        (f.event_id, f.recorded_at, f.event()) for f in found
    ]
    return found


async def test_each_change_comes_with_the_order_as_it_was_at_that_moment(client_for: Clients) -> None:
    demo, acme = client_for("demo"), client_for("acme")
    # o-1 shipped while its invoice was still open, paid afterwards; o-2 paid first, then shipped.
    await demo.put("/v1/orders/o-1", json=order_body("c-1", general="accepted", delivery="at_pickup_point",
                                                     payment="invoice_issued"))  # fmt: skip
    await demo.post("/v1/orders/o-1/status", json={"code": "shipped"})
    await demo.post("/v1/orders/o-1/status", json={"code": "paid"})
    await demo.put("/v1/orders/o-2", json=order_body("c-2", delivery="at_pickup_point", payment="invoice_issued"))
    await demo.post("/v1/orders/o-2/status", json={"code": "paid"})
    await demo.post("/v1/orders/o-2/status", json={"code": "shipped"})
    await demo.post("/v1/orders/o-2/status", json={"code": "delivered"})
    await acme.put("/v1/orders/a-1", json=order_body("c-9", delivery="at_pickup_point"))
    await acme.post("/v1/orders/a-1/status", json={"code": "shipped"})

    found = await lines(demo, period(status_type="delivery", to=["shipped", "delivered"]))

    assert [(f.change.order_id, f.change.to_status.code) for f in found] == [
        ("o-1", "shipped"),
        ("o-2", "shipped"),
        ("o-2", "delivered"),
    ]  # fmt: skip: in the order they were applied, this partner's only
    first, second, third = (f.event() for f in found)  # validated as the contract
    assert first.order.statuses.model_dump() == {
        "general": {"code": "accepted", "name": "Принят"},
        "delivery": {"code": "shipped", "name": "Отгружен"},
        "payment": {"code": "invoice_issued", "name": "Счёт выставлен"},  # not "paid", which came later
    }
    assert first.from_status is not None and first.from_status.model_dump() == {"code": "at_pickup_point",
                                                                                 "name": "В пункте выдачи"}  # fmt: skip
    assert second.order.statuses.payment is not None and second.order.statuses.payment.code == "paid"
    assert third.from_status is not None and third.from_status.code == "shipped" and third.to_include_in_analytics
    assert first.order.customer.model_dump() == {"id": "c-1", "phone": "+7 900 123-45-67", "name": "Иван",
                                                 "sms_consent": True}  # fmt: skip
    assert str(first.order.amount) == "2500.50" and first.sequence == 4
    assert all(f.event_id and f.recorded_at.tzinfo is not None for f in found)
    answer = await demo.get("/v1/status-changes", params=period(status_type="delivery", to=["shipped"]))
    raw = json.loads(answer.content.splitlines()[0])
    assert isinstance(raw, list) and len(raw) == len(FIELDS)  # an array of FIELDS

    assert await lines(demo, period(status_type="delivery", to=["at_delivery_point"])) == []
    earlier = datetime.now(UTC) - timedelta(days=2)
    old = {"since": (earlier - timedelta(days=1)).isoformat(), "until": earlier.isoformat()}
    assert await lines(demo, old | {"status_type": "delivery", "to": ["shipped"]}) == []


async def test_a_change_comes_with_the_order_as_its_published_event_carried_it(client_for: Clients) -> None:
    """One upsert that ships and pays at once publishes two events, each with the order after both: the line is
    that event (the history row keeps the statuses it carried), not the order half-way between them."""
    demo = client_for("demo")
    await demo.put("/v1/orders/o-3", json=order_body("c-3", delivery="at_pickup_point", payment="invoice_issued"))
    later = order_body("c-3", delivery="shipped", payment="paid")
    later["occurred_at"] = (T0 + timedelta(hours=1)).isoformat()
    answer = await demo.put("/v1/orders/o-3", json=later)
    assert answer.status_code == 200, answer.text

    (shipped,) = await lines(demo, period(status_type="delivery", to=["shipped"]))
    (paid,) = await lines(demo, period(status_type="payment", to=["paid"]))

    for event in (shipped.event(), paid.event()):
        assert event.order.statuses.model_dump() == {
            "general": None,
            "delivery": {"code": "shipped", "name": "Отгружен"},
            "payment": {"code": "paid", "name": "Оплачен"},
        }
    assert shipped.change.from_status == ("at_pickup_point", "В пункте выдачи")
    assert paid.change.from_status == ("invoice_issued", "Счёт выставлен")


async def test_a_change_recorded_without_the_statuses_is_read_with_the_order_as_it_was(
    client_for: Clients, database: str
) -> None:
    """A history row written before migration 1008, or by the previous release while this one rolls out, keeps no
    statuses: its line probes the order's earlier rows, as the query did before."""
    demo = client_for("demo")
    await demo.put("/v1/orders/o-4", json=order_body("c-4", delivery="at_pickup_point", payment="invoice_issued"))
    await demo.post("/v1/orders/o-4/status", json={"code": "paid"})
    await demo.post("/v1/orders/o-4/status", json={"code": "shipped"})
    await demo.post("/v1/orders/o-4/status", json={"code": "in_progress"})  # after the shipment: not in its line
    conn = await asyncpg.connect(database)
    try:
        blanked = await conn.execute(
            "UPDATE status_history SET from_name = NULL, general_code = NULL, general_name = NULL, "
            "delivery_code = NULL, delivery_name = NULL, payment_code = NULL, payment_name = NULL "
            "WHERE order_id = 'o-4' AND to_code IN ('at_pickup_point', 'shipped')"
        )
        assert blanked == "UPDATE 2"
    finally:
        await conn.close()

    (shipped,) = await lines(demo, period(status_type="delivery", to=["shipped"]))

    assert shipped.event().order.statuses.model_dump() == {
        "general": None,
        "delivery": {"code": "shipped", "name": "Отгружен"},
        "payment": {"code": "paid", "name": "Оплачен"},
    }
    assert shipped.change.from_status == ("at_pickup_point", "В пункте выдачи")


async def test_what_tsv_escapes_and_its_nulls_read_back_as_the_json_has_them(
    client_for: Clients, database: str
) -> None:
    demo = client_for("demo")
    body = order_body('c"\\N\\')  # no general or payment status: nulls
    body["customer"]["phone"] = None
    answer = await demo.put("/v1/orders/o-5", json=body | {"statuses": {"delivery": "at_pickup_point"}})
    assert answer.status_code == 200, answer.text
    await demo.post("/v1/orders/o-5/status", json={"code": "shipped"})
    # What the API refuses today (control characters) an older row may hold; COPY escapes it.
    name = "Tab\there, new\nline, \\N, back\\slash, \r\x08\x0c\x0b"
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE orders SET customer_name = $1 WHERE order_id = 'o-5'", name)
    finally:
        await conn.close()

    (shipped,) = await lines(demo, period(status_type="delivery", to=["shipped"]))  # the same from both

    customer = shipped.event().order.customer
    assert (customer.id, customer.name, customer.phone) == ('c"\\N\\', name, None)
    assert shipped.change.order.statuses.payment is None and shipped.change.order.statuses.general is None
    refused = await demo.get("/v1/status-changes", params=period(status_type="delivery", to=["shipped"]),
                             headers={"accept": f"{TSV};q=0, application/json"})  # fmt: skip
    assert refused.headers["content-type"].startswith("application/x-ndjson")  # TSV refused: the default


async def test_a_reversed_or_too_long_period_is_refused(client_for: Clients) -> None:
    demo = client_for("demo")
    now = datetime.now(UTC)
    for since, until, code in (
        (now, now - timedelta(days=1), "period_reversed"),
        (now - timedelta(days=91), now, "period_too_long"),
    ):
        params = {"status_type": "delivery", "to": ["shipped"], "since": since.isoformat(), "until": until.isoformat()}
        refused = await demo.get("/v1/status-changes", params=params)
        assert refused.status_code == 422 and refused.json()["code"] == code
        assert refused.headers["content-type"] == "application/problem+json"
    missing = await demo.get("/v1/status-changes", params={"status_type": "delivery"})
    assert missing.status_code == 422
