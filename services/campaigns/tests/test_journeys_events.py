"""Journeys on real Kafka and PostgreSQL with a clock the test moves: the payment reminder end to end (two
reminders, then paid and out at once), "wait until" moving on within a second of the status change, an edit while
orders wait, and pause and resume on both sides of late_send_minutes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from campaigns.settings import CampaignsSettings
from contracts.envelope import Envelope
from contracts.orders import OrderStatusChanged
from devtools.pytest_plugin import wait_until

from .conftest import SEED_CAMPAIGN, Clock, Topics, status_changed

AWAITING = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "awaiting_payment"}
PAID = {"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}
TRIGGER = {"status_type": "payment", "from": "any", "to": "awaiting_payment"}


def reminder_journey() -> dict[str, Any]:
    return {
        "name": "Payment reminder",
        "trigger": TRIGGER,
        "exit_conditions": [PAID],
        "steps": [
            {"kind": "wait_duration", "minutes": 24 * 60},
            {"kind": "filter", "conditions": [AWAITING]},
            {"kind": "send_sms", "template": "Заказ {{ order.id }} ждёт оплаты", "sender": "DemoShop"},
            {"kind": "wait_duration", "minutes": 48 * 60},
            {"kind": "filter", "conditions": [AWAITING]},
            {"kind": "send_sms", "template": "Напоминаем: заказ {{ order.id }} ждёт оплаты"},
            {"kind": "wait_duration", "minutes": 72 * 60},
            {"kind": "send_sms", "template": "Последнее напоминание о заказе {{ order.id }}"},
        ],
    }


def awaiting(order_id: str = "o-1", customer_id: str = "c-1") -> Envelope[OrderStatusChanged]:
    return status_changed(to="awaiting_payment", before="invoice_issued", payment="awaiting_payment",
                          order_id=order_id, customer_id=customer_id, sequence=2)  # fmt: skip


def paid(order_id: str = "o-1") -> Envelope[OrderStatusChanged]:
    return status_changed(to="paid", before="awaiting_payment", payment="paid", order_id=order_id, sequence=3)


@pytest.fixture
def timers_sleep_s() -> float:
    return 1.0


@pytest.fixture
def campaigns_settings(campaigns_settings: CampaignsSettings, timers_sleep_s: float) -> CampaignsSettings:
    """conftest's, with the timers' longest sleep between rounds as the test wants it."""
    return campaigns_settings.model_copy(update={"journey_timers_sleep_s": timers_sleep_s})


@pytest.fixture
async def db(campaigns_settings: CampaignsSettings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(campaigns_settings.database_url)
    yield conn
    await conn.close()


async def start(demo: httpx.AsyncClient, journey: dict[str, Any]) -> str:
    created = await demo.post("/v1/campaigns", json=journey)
    assert created.status_code == 201, created.text
    campaign_id: str = created.json()["id"]
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
    return campaign_id


async def runs(db: asyncpg.Connection, campaign_id: str) -> dict[str, tuple[str, int, str | None]]:
    rows = await db.fetch(
        "SELECT order_id, state, step, left_reason FROM journey_runs WHERE campaign_id = $1", campaign_id
    )
    return {r["order_id"]: (r["state"], r["step"], r["left_reason"]) for r in rows}


async def wait_for_run(db: asyncpg.Connection, campaign_id: str, order_id: str, state: str, step: int) -> None:
    async def there() -> bool:
        found = (await runs(db, campaign_id)).get(order_id)
        return found is not None and found[:2] == (state, step)

    await wait_until(there, timeout_s=15, what=f"run of {order_id} {state} at step {step}")


async def texts(topics: Topics) -> list[str]:
    return sorted(e.data.text for e in await topics.send_sms())


async def test_the_payment_reminder_reminds_twice_then_the_paid_order_leaves_at_once(
    demo: httpx.AsyncClient, topics: Topics, clock: Clock, db: asyncpg.Connection, campaigns_app: FastAPI
) -> None:
    campaign_id = await start(demo, reminder_journey())
    await topics.publish(awaiting())
    await wait_for_run(db, campaign_id, "o-1", "waiting", 0)  # entered, waits 24 h: nothing sent
    assert await topics.send_sms() == []
    order = {"order_id": "o-1", "amount": "10", "currency": "RUB", "customer": {"id": "c-1", "phone": None}}
    again = {"from": "invoice_issued", "to": "awaiting_payment", "order": order}
    preview = (await demo.post(f"/v1/campaigns/{campaign_id}/preview", json=again)).json()
    assert preview["outcome"] == "outside_reentry", preview  # once per order: the order is in already

    clock.now += timedelta(hours=24) - timedelta(seconds=1)  # never early
    timers, before = campaigns_app.state.journey_timers, campaigns_app.state.journey_timers.rounds
    await asyncio.sleep(2)
    assert await topics.send_sms() == [] and (await runs(db, campaign_id))["o-1"][:2] == ("waiting", 0)
    # At rest (the next due a second away): a round a second at most; issue 34 counts every process's wake-ups.
    assert timers.rounds - before <= 3, f"{timers.rounds - before} rounds in 2 s at rest"
    clock.now += timedelta(seconds=1)
    (first,) = await topics.wait_for_send_sms(1)
    assert first.data.text == "Заказ o-1 ждёт оплаты" and first.data.sender == "DemoShop"
    await wait_for_run(db, campaign_id, "o-1", "waiting", 3)

    clock.now += timedelta(hours=48)
    sent = await topics.wait_for_send_sms(2)
    assert sorted(e.data.text for e in sent)[0].startswith("Заказ")
    assert len({e.data.idempotency_key for e in sent}) == 2
    await wait_for_run(db, campaign_id, "o-1", "waiting", 6)

    await topics.publish(paid())  # the exit: out at once, whatever step it waits at
    await wait_for_run(db, campaign_id, "o-1", "left", 6)
    assert (await runs(db, campaign_id))["o-1"][2] == "exit"
    clock.now += timedelta(hours=72)
    idle = timers.rounds
    await asyncio.sleep(1.5)
    assert len(await topics.send_sms()) == 2  # exactly two SMS
    # Nothing waits: the loop looks for the earliest due run (a read) and claims nothing (no transaction).
    assert timers.rounds == idle, f"{timers.rounds - idle} claims in 1.5 s with nothing waiting"

    figures = (await demo.get(f"/v1/campaigns/{campaign_id}/journey")).json()
    assert [s["sent"] for s in figures["steps"]] == [0, 0, 1, 0, 0, 1, 0, 0]
    assert figures["steps"][6]["exited"] == 1 and figures["exited_total"] == 1 and figures["waiting_total"] == 0


@pytest.mark.parametrize("timers_sleep_s", [5.0])  # the consumer wakes the timers: no round to wait for
async def test_wait_until_moves_on_within_a_second_of_the_status_change(
    demo: httpx.AsyncClient, topics: Topics, db: asyncpg.Connection
) -> None:
    journey = {
        "name": "Thanks for paying",
        "trigger": TRIGGER,
        "steps": [
            {"kind": "wait_until", "conditions": [PAID], "longest_minutes": 3 * 24 * 60},
            {"kind": "send_sms", "template": "Спасибо за оплату заказа {{ order.id }}"},
        ],
    }
    campaign_id = await start(demo, journey)
    await topics.publish(awaiting())
    await wait_for_run(db, campaign_id, "o-1", "waiting", 0)
    published = time.monotonic()
    await topics.publish(paid())
    (thanks,) = await topics.wait_for_send_sms(1)
    assert time.monotonic() - published < 1.0, "the wait_until step moved on later than a second after the change"
    assert thanks.data.text == "Спасибо за оплату заказа o-1"
    await wait_for_run(db, campaign_id, "o-1", "done", 2)


async def test_an_edit_while_orders_wait_keeps_each_on_its_version(
    demo: httpx.AsyncClient, topics: Topics, clock: Clock, db: asyncpg.Connection
) -> None:
    journey = {
        "name": "One reminder",
        "trigger": TRIGGER,
        "steps": [{"kind": "wait_duration", "minutes": 60}, {"kind": "send_sms", "template": "v1 {{ order.id }}"}],
    }
    campaign_id = await start(demo, journey)
    await topics.publish(awaiting("o-old", "c-old"))
    await wait_for_run(db, campaign_id, "o-old", "waiting", 0)
    edited = journey | {"steps": [journey["steps"][0], {"kind": "send_sms", "template": "v2 {{ order.id }}"}]}
    assert (await demo.put(f"/v1/campaigns/{campaign_id}", json=edited)).status_code == 200
    await topics.publish(awaiting("o-new", "c-new"))
    await wait_for_run(db, campaign_id, "o-new", "waiting", 0)
    versions = (await demo.get(f"/v1/campaigns/{campaign_id}/journey")).json()["versions"]
    assert versions == [{"version": 1, "orders_in_journey": 1}, {"version": 3, "orders_in_journey": 1}]

    clock.now += timedelta(minutes=60)
    await topics.wait_for_send_sms(2)
    assert await texts(topics) == ["v1 o-old", "v2 o-new"]


async def test_pause_holds_the_waits_and_resume_sends_late_only_within_late_send_minutes(
    demo: httpx.AsyncClient, topics: Topics, clock: Clock, db: asyncpg.Connection
) -> None:
    journey = {
        "name": "Reminder, paused",
        "trigger": TRIGGER,
        "late_send_minutes": 30,
        "steps": [{"kind": "wait_duration", "minutes": 60}, {"kind": "send_sms", "template": "Hi {{ order.id }}"}],
    }
    campaign_id = await start(demo, journey)
    await topics.publish(awaiting("o-early", "c-early"))  # due at +60 min
    await wait_for_run(db, campaign_id, "o-early", "waiting", 0)
    clock.now += timedelta(minutes=40)
    await topics.publish(awaiting("o-late", "c-late"))  # due at +100 min
    await wait_for_run(db, campaign_id, "o-late", "waiting", 0)
    clock.now += timedelta(minutes=1)
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/pause")).status_code == 200

    clock.now += timedelta(minutes=89)  # +130 min: both waits ended during the pause, 70 and 30 minutes ago
    await asyncio.sleep(1.5)
    assert await topics.send_sms() == []  # held: nothing fires while paused
    assert {o: r[0] for o, r in (await runs(db, campaign_id)).items()} == {"o-early": "held", "o-late": "held"}

    assert (await demo.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
    (late,) = await topics.wait_for_send_sms(1)
    assert late.data.text == "Hi o-late"
    await wait_for_run(db, campaign_id, "o-late", "done", 2)
    assert (await runs(db, campaign_id))["o-early"] == ("left", 0, "paused_too_long")
    assert (await demo.delete(f"/v1/campaigns/{campaign_id}")).status_code == 200


async def test_the_cap_and_quiet_hours_apply_when_a_send_step_fires_not_when_the_order_entered(
    demo: httpx.AsyncClient, topics: Topics, clock: Clock, db: asyncpg.Connection
) -> None:
    cap = {"quiet_hours": {"start": "09:00", "end": "21:00"}, "frequency_cap": {"max_messages": 1, "window_hours": 24}}
    assert (await demo.put("/v1/settings", json=cap)).status_code == 200
    journey = {
        "name": "Evening reminder",
        "trigger": TRIGGER,
        "steps": [{"kind": "wait_duration", "minutes": 630}, {"kind": "send_sms", "template": "J {{ order.id }}"}],
    }
    campaign_id = await start(demo, journey)
    await topics.publish(awaiting("o-1", "c-1"), awaiting("o-2", "c-2"))  # 12:00 in Moscow: both enter
    await wait_for_run(db, campaign_id, "o-2", "waiting", 0)
    await wait_for_run(db, campaign_id, "o-1", "waiting", 0)
    # After the entry, another campaign sends customer c-1 its one SMS of the day.
    shipped = await start(demo, SEED_CAMPAIGN | {"filters": []})
    await topics.publish(status_changed(to="shipped", payment="awaiting_payment", order_id="o-1", sequence=3))
    (other,) = await topics.wait_for_send_sms(1)
    assert other.data.campaign_id == shipped

    clock.now += timedelta(minutes=630)  # 22:30 in Moscow: the reminders fire now, in quiet hours
    await wait_for_run(db, campaign_id, "o-1", "left", 1)
    assert (await runs(db, campaign_id))["o-1"][2] == "capped"
    sent = await topics.wait_for_send_sms(2)
    (reminder,) = [e for e in sent if e.data.campaign_id == campaign_id]
    assert reminder.data.order_id == "o-2" and reminder.data.not_before == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
