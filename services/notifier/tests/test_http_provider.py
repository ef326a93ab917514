"""The HTTP provider against a real gateway on loopback that fails on demand (5xx, slow, 429, 4xx)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from notifier.app import create_app
from notifier.providers.http import HttpProvider
from notifier.settings import NotifierSettings

A, B = "+79161230001", "+79161230002"


@pytest.fixture
async def http_app(http_settings: NotifierSettings) -> AsyncIterator[FastAPI]:
    app = create_app(http_settings)
    async with app.router.lifespan_context(app):
        yield app


def webhook(app: FastAPI, secret: str | None) -> httpx.AsyncClient:
    headers = {"X-Webhook-Secret": secret} if secret else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier", headers=headers)


async def test_transient_failures_are_retried_with_backoff_without_blocking_others(
    kit: Any, gateway: Any, http_app: FastAPI
) -> None:
    gateway.plan[A] = ["500", "slow", "429:1", "ok"]
    flaky, healthy = kit.command(phone=A), kit.command(phone=B)
    await kit.publish(flaky, healthy)
    await kit.wait_status(healthy.id, "dispatched")
    assert await kit.status(flaky.id) in ("pending", "sending")  # still retrying; B did not wait for it
    await kit.wait_status(flaky.id, "dispatched", timeout_s=20)

    calls = [(t, answer) for key, t, answer in gateway.requests if key == flaky.id]
    assert [answer for _, answer in calls] == ["500", "slow", "429:1", "ok"]
    after_429 = calls[3][0] - calls[2][0]
    assert after_429 >= 1.0, f"Retry-After: 1 was not honoured ({after_429:.2f}s)"
    assert gateway.handset[flaky.id] == 1  # the slow answer had taken it: the retry under the same key did not resend
    assert gateway.bodies[flaky.id]["to"] == A and gateway.bodies[flaky.id]["id"] == flaky.id
    (row,) = await kit.rows("SELECT attempts FROM messages WHERE send_sms_id = $1", flaky.id)
    assert row["attempts"] == 4
    attempts = await kit.rows(
        "SELECT a.status, a.detail FROM attempts a JOIN messages m USING (message_id) "
        "WHERE m.send_sms_id = $1 ORDER BY attempt",
        flaky.id,
    )
    assert [a["status"] for a in attempts] == ["failed", "failed", "failed", "accepted"]
    assert "HTTP 500" in attempts[0]["detail"] and "timeout" in attempts[1]["detail"]
    assert "HTTP 429" in attempts[2]["detail"]
    events = await kit.events(at_least=2)
    assert Counter(type(e.data) for e in events) == {SmsDispatched: 2}


async def test_a_retry_is_sent_when_due_though_the_dispatcher_idled_into_a_long_pause(
    kit: Any, gateway: Any, http_app: FastAPI
) -> None:
    """At rest the dispatcher's pause grows to `DISPATCH_IDLE_POLL_S`, and a message taken in by the intake is sent
    without waking it: a failed send wakes it, so that its retry (due within `retry_base_s`, 0.2 s here) does not
    wait for the pause to end (3.2 s here; the retry came 2.5 s after the failure without the wake-up)."""
    await asyncio.sleep(3.5)  # idle: pauses of 0.2, 0.4, 0.8, 1.6, then 3.2 s
    gateway.plan[A] = ["500", "ok"]
    flaky = kit.command(phone=A)
    await kit.publish(flaky)
    await kit.wait_status(flaky.id, "dispatched", timeout_s=20)
    calls = [t for key, t, _ in gateway.requests if key == flaky.id]
    assert len(calls) == 2 and calls[1] - calls[0] < 1.5, calls


async def test_after_the_last_attempt_a_dead_letter_and_sms_failed(
    kit: Any, gateway: Any, http_settings: NotifierSettings
) -> None:
    gateway.plan[A] = ["503", "503", "503"]
    gateway.plan[B] = ["400"]
    app = create_app(http_settings.model_copy(update={"max_attempts": 3}))
    exhausted, refused = kit.command(phone=A), kit.command(phone=B)
    async with app.router.lifespan_context(app):
        await kit.publish(exhausted, refused)
        await kit.wait_status(exhausted.id, "failed", timeout_s=20)
        await kit.wait_status(refused.id, "failed")
        events = await kit.events(at_least=2)
    failed = {e.data.send_sms_id: e.data for e in events if isinstance(e.data, SmsFailed)}
    assert failed[exhausted.id].reason == "provider_error" and failed[exhausted.id].attempts == 3
    assert failed[refused.id].reason == "provider_rejected" and failed[refused.id].attempts == 1
    assert failed[refused.id].provider == "http"
    dead = await kit.dead_letters()
    by_reason = {dict(r.headers)["dlq-reason"].decode(): r for r in dead}
    assert set(by_reason) == {"provider_error", "provider_rejected"}
    record = by_reason["provider_error"]
    assert record.value == exhausted.to_bytes() and record.key == f"acme:{A}".encode()
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["dlq-original-topic"] == kit.settings.topic_send_sms and "503" in headers["dlq-error"]
    assert gateway.handset == Counter()


async def test_a_retry_that_would_land_after_expires_at_expires_the_message(
    kit: Any, gateway: Any, http_app: FastAPI
) -> None:
    gateway.plan[A] = ["429:30"]  # come back in 30 s; the message expires in 5 s
    soon = kit.command(phone=A, expires_in=timedelta(seconds=5))
    await kit.publish(soon)
    await kit.wait_status(soon.id, "expired")
    (event,) = await kit.events(at_least=1)
    assert isinstance(event.data, SmsFailed) and event.data.reason == "expired" and event.data.attempts == 1
    assert gateway.handset == Counter()


async def test_delivery_reports_merge_per_segment_and_never_move_backwards(
    kit: Any, gateway: Any, http_app: FastAPI
) -> None:
    long = kit.command(phone=A, text="Ваш заказ " * 20)  # 200 Cyrillic characters: 3 UCS-2 segments
    await kit.publish(long)
    await kit.wait_status(long.id, "dispatched")
    pid = gateway.sent[long.id]
    assert gateway.bodies[long.id]["segments"] == 3 and gateway.bodies[long.id]["encoding"] == "ucs2"

    async with webhook(http_app, None) as anonymous, webhook(http_app, "wrong-secret-0123456789") as wrong:
        assert (await anonymous.post("/v1/delivery-reports/http", json={})).status_code == 401
        assert (await wrong.post("/v1/delivery-reports/http", json={})).status_code == 401
    secret = kit.settings.delivery_report_secret
    async with webhook(http_app, secret) as hook:
        bad = await hook.post("/v1/delivery-reports/http", json={"message_id": pid, "status": "teleported"})
        assert bad.status_code == 422
        first = [
            {"message_id": pid, "segment": 0, "status": "DELIVRD"},
            {"message_id": pid, "segment": 1, "status": "delivered"},
        ]
        assert (await hook.post("/v1/delivery-reports/http", json=first)).json() == {"received": 2, "matched": 2}
        await hook.post("/v1/delivery-reports/http", json={"message_id": pid, "segment": 2, "status": "sent"})
        assert await kit.status(long.id) == "dispatched"  # two of three segments delivered
        await hook.post("/v1/delivery-reports/http", json={"message_id": pid, "segment": 2, "status": "delivered"})
        assert await kit.status(long.id) == "delivered"
        late = [
            {"message_id": pid, "segment": 2, "status": "sent"},
            {"message_id": pid, "segment": 1, "status": "failed"},
        ]
        await hook.post("/v1/delivery-reports/http", json=late)  # a late "sent" after "delivered" changes nothing
        unknown = await hook.post("/v1/delivery-reports/http", json={"message_id": "nobody", "status": "delivered"})
        assert unknown.json() == {"received": 1, "matched": 0}
    assert await kit.status(long.id) == "delivered"
    events = await kit.events(at_least=2)
    assert [type(e.data) for e in events] == [SmsDispatched, SmsDelivered]
    receipts = await kit.rows("SELECT segment, status FROM receipts WHERE provider_message_id = $1 ORDER BY 1", pid)
    assert [(r["segment"], r["status"]) for r in receipts] == [(0, "delivered"), (1, "delivered"), (2, "delivered")]


async def test_the_per_provider_rate_limit_spaces_the_sends(
    kit: Any, gateway: Any, http_settings: NotifierSettings
) -> None:
    app = create_app(http_settings.model_copy(update={"provider_rate_per_s": 5}))
    commands = [kit.command(phone=f"+7916123{n:04d}") for n in range(10)]
    async with app.router.lifespan_context(app):
        await kit.publish(*commands)
        for sms in commands:
            await kit.wait_status(sms.id, "dispatched")
    times = sorted(t for _, t, _ in gateway.requests)
    assert len(times) == 10
    # A burst of five, then one every 0.2 s: the tenth about a second after the first is granted. The gateway
    # sees the first request late by the time its connection took to open (0.21 s once on a loaded machine),
    # so allow for that; without the limit all ten arrive within a few tens of milliseconds.
    assert times[-1] - times[0] >= 0.6, "10 messages at 5/s spread over about a second"


async def test_a_crash_after_the_gateway_accepted_resends_under_the_same_key_once(
    kit: Any, gateway: Any, http_settings: NotifierSettings, crash_around: Any
) -> None:
    settings = http_settings.model_copy(update={"inflight_lease_s": 1.0, "dispatch_poll_interval_s": 60.0})
    inner = HttpProvider(settings.http_provider_url, settings.http_provider_token, timeout_s=2)
    crashing = crash_around(inner, "after_accept")
    first = create_app(settings, provider=crashing)
    sms = kit.command(phone=A)
    async with first.router.lifespan_context(first):
        await kit.publish(sms)
        await asyncio.wait_for(crashing.crashed.wait(), 15)
    assert await kit.status(sms.id) == "sending"

    restarted = create_app(settings.model_copy(update={"dispatch_poll_interval_s": 0.2}))
    async with restarted.router.lifespan_context(restarted):
        await kit.wait_status(sms.id, "dispatched", timeout_s=20)
    assert [key for key, _, _ in gateway.requests] == [sms.id, sms.id]  # asked twice, under one key
    assert gateway.handset[sms.id] == 1  # one SMS reached the handset
    (row,) = await kit.rows("SELECT provider_message_id FROM messages WHERE send_sms_id = $1", sms.id)
    assert row["provider_message_id"] == gateway.sent[sms.id]


async def test_two_notifier_instances_share_the_providers_rate_limit(
    kit: Any, gateway: Any, http_settings: NotifierSettings
) -> None:
    # Each instance used to have its own limiter: two sent 30 messages at 2 x 10/s, a burst of twenty then 20/s,
    # within about half a second. Shared, they send a burst of ten, then one every 0.1 s: two seconds.
    settings = http_settings.model_copy(update={"provider_rate_per_s": 10})
    commands = [kit.command(phone=f"+7916124{n:04d}") for n in range(30)]
    first, second = create_app(settings), create_app(settings)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        await kit.publish(*commands)
        for sms in commands:
            await kit.wait_status(sms.id, "dispatched", timeout_s=30)
    owners = await kit.rows("SELECT DISTINCT sent_by FROM messages")
    assert len(owners) == 2, "both instances sent"
    times = sorted(t for _, t, _ in gateway.requests)
    assert len(times) == 30
    # The first request reaches the gateway late by the time its connection took to open (0.2 s on a loaded
    # machine), hence the margin.
    assert times[-1] - times[0] >= 1.6, f"30 messages at 10/s over both instances took {times[-1] - times[0]:.2f}s"
