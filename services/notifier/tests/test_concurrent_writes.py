"""Every write endpoint of the notifier, 20 requests at once on one resource (docs/concurrency.md).

Each test asserts the endpoint's rule: no 5xx; the documented answers (one creation and the rest no-ops, or one
removal and the rest 404); and, where the write moves a message, the records on `notifier.sms-events.v1` equal its
final state: each of its events once, none missing.

One service instance (one database, one topic namespace, one HTTP gateway on loopback) serves the whole module;
each test uses its own partner and numbers, so the tests do not see each other's writes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from contracts.envelope import decode_any
from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from devtools.concurrency import at_once, codes, statuses
from devtools.pytest_plugin import (
    ClientFactory,
    Infrastructure,
    partner_clients,
    read_topic,
    token_issuer,
    wait_until,
)
from notifier.app import create_app
from notifier.settings import NotifierSettings
from servicekit.outbox import idempotent_producer

from .conftest import Gateway, command

N = 20
SMS_EVENTS = (SmsDispatched, SmsFailed, SmsDelivered)

# --- one service for the module ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def module_gateway() -> AsyncIterator[Gateway]:
    server = Gateway()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def notifier_settings(
    infrastructure: Infrastructure,
    module_database: str,
    module_topic_prefix: str,
    module_gateway: Gateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> NotifierSettings:
    return NotifierSettings(
        database_url=module_database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=module_topic_prefix,
        outbox_poll_interval_s=0.2,
        dispatch_poll_interval_s=0.2,
        console_outbox_file=Path(tmp_path_factory.mktemp("notifier")) / "sms.jsonl",
        retry_base_s=0.2,
        retry_max_s=1.0,
        provider_rate_per_s=1000,
        notifier_provider="http",
        http_provider_url=module_gateway.url,
        http_provider_token=Gateway.TOKEN,
        http_provider_timeout_s=2.0,
    )


@pytest.fixture(scope="module")
async def notifier_app(notifier_settings: NotifierSettings) -> AsyncIterator[FastAPI]:
    app = create_app(notifier_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def client_for(notifier_app: FastAPI, notifier_settings: NotifierSettings) -> AsyncIterator[ClientFactory]:
    async with partner_clients(notifier_app, notifier_settings) as make:
        yield make


@pytest.fixture(scope="module")
async def webhook(notifier_app: FastAPI, notifier_settings: NotifierSettings) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-Webhook-Secret": notifier_settings.delivery_report_secret}
    transport = httpx.ASGITransport(app=notifier_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier", headers=headers) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------------


def fresh_phone() -> str:
    return f"+7916{uuid.uuid4().int % 10_000_000:07d}"


async def rows(settings: NotifierSettings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def dispatched(settings: NotifierSettings, gateway: Gateway, *envelopes: Any) -> list[str]:
    """Publish SendSms commands and wait until the gateway took each; their provider message ids."""
    producer = idempotent_producer(settings.kafka_bootstrap_servers, "notifier-tests")
    await producer.start()
    try:
        for envelope in envelopes:
            await producer.send_and_wait(settings.topic_send_sms, envelope.to_bytes(), key=envelope.key())
    finally:
        await producer.stop()

    async def all_dispatched() -> bool:
        ids = [e.id for e in envelopes]
        found = await rows(settings, "SELECT status FROM messages WHERE send_sms_id = ANY($1::text[])", ids)
        return len(found) == len(ids) and all(r["status"] == "dispatched" for r in found)

    await wait_until(all_dispatched, what="the messages to be dispatched")
    return [gateway.sent[e.id] for e in envelopes]


async def events_of(settings: NotifierSettings, send_sms_id: str, count: int) -> list[str]:
    """The event types of one message on notifier.sms-events.v1, once there are `count` (and no more came)."""
    found: list[str] = []

    async def arrived() -> bool:
        nonlocal found
        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_sms_events)
        events = [decode_any(r.value or b"", SMS_EVENTS).data for r in records]
        found = [type(e).__name__ for e in events if isinstance(e, SMS_EVENTS) and e.send_sms_id == send_sms_id]
        return len(found) >= count

    await wait_until(arrived, what=f"{count} events of {send_sms_id}")
    await asyncio.sleep(0.3)  # anything published twice would be there by now
    await arrived()
    return found


# --- POST and DELETE /v1/opt-outs/{phone} --------------------------------------------------------


async def test_opt_outs_of_one_number_one_creates_the_rest_are_no_ops(client_for: ClientFactory) -> None:
    client, phone = client_for(f"p-{uuid.uuid4().hex[:8]}"), fresh_phone()
    responses = await at_once(*(client.post(f"/v1/opt-outs/{phone}") for _ in range(N)))

    assert statuses(responses) == {201: 1, 200: N - 1}
    assert len({(r.json()["phone"], r.json()["created_at"]) for r in responses}) == 1  # all name the one entry
    assert [o["phone"] for o in (await client.get("/v1/opt-outs")).json()["items"]] == [phone]


async def test_opt_ins_of_one_number_one_removes_the_rest_404(client_for: ClientFactory) -> None:
    client, phone = client_for(f"p-{uuid.uuid4().hex[:8]}"), fresh_phone()
    assert (await client.post(f"/v1/opt-outs/{phone}")).status_code == 201
    responses = await at_once(*(client.delete(f"/v1/opt-outs/{phone}") for _ in range(N)))

    assert statuses(responses) == {204: 1, 404: N - 1}
    assert {r.json()["code"] for r in responses if r.status_code == 404} == {"not_found"}
    assert (await client.get("/v1/opt-outs")).json()["items"] == []


async def test_opt_outs_and_opt_ins_interleaved_answer_what_they_did(client_for: ClientFactory) -> None:
    """Opt-outs racing opt-ins of one number: every opt-out answers the entry it found or made (201 or 200), every
    opt-in 204 or 404, and the ledger ends as the answers say: an entry exactly when the last to act was an opt-out."""
    client, phone = client_for(f"p-{uuid.uuid4().hex[:8]}"), fresh_phone()
    for _ in range(5):  # several rounds: the race is narrow
        requests = [
            client.post(f"/v1/opt-outs/{phone}") if i % 2 else client.delete(f"/v1/opt-outs/{phone}") for i in range(N)
        ]
        responses = await at_once(*requests)

        assert set(statuses(responses)) <= {200, 201, 204, 404}
        assert all(r.json()["phone"] == phone for r in responses if r.status_code in (200, 201))
        listed = [o["phone"] for o in (await client.get("/v1/opt-outs")).json()["items"]]
        assert listed in ([], [phone])


# --- POST /v1/delivery-reports/http --------------------------------------------------------------


async def test_one_delivery_report_at_once_twenty_times_delivers_once(
    webhook: httpx.AsyncClient, notifier_settings: NotifierSettings, module_gateway: Gateway
) -> None:
    """The gateway retries a webhook it thinks failed: the same report many times at once is one delivery, one
    SmsDelivered."""
    sms = command(partner=f"p-{uuid.uuid4().hex[:8]}", phone=fresh_phone())
    (pid,) = await dispatched(notifier_settings, module_gateway, sms)
    report = {"message_id": pid, "status": "delivered"}
    responses = await at_once(*(webhook.post("/v1/delivery-reports/http", json=report) for _ in range(N)))

    assert statuses(responses) == {200: N}
    assert {r.json()["matched"] for r in responses} == {1}
    (message,) = await rows(notifier_settings, "SELECT status FROM messages WHERE send_sms_id = $1", sms.id)
    assert message["status"] == "delivered"
    assert await events_of(notifier_settings, sms.id, 2) == ["SmsDispatched", "SmsDelivered"]


async def test_reports_of_every_segment_at_once_deliver_once(
    webhook: httpx.AsyncClient, notifier_settings: NotifierSettings, module_gateway: Gateway
) -> None:
    """A three-segment message's reports arrive together, each segment's several times, "sent" and "delivered"
    mixed: receipts never move backwards, and the message is delivered once all three are, with one event."""
    sms = command(partner=f"p-{uuid.uuid4().hex[:8]}", phone=fresh_phone(), text="Ваш заказ " * 20)
    (pid,) = await dispatched(notifier_settings, module_gateway, sms)
    reports = [{"message_id": pid, "segment": i % 3, "status": "delivered" if i % 2 else "sent"} for i in range(N)]
    responses = await at_once(*(webhook.post("/v1/delivery-reports/http", json=report) for report in reports))

    assert statuses(responses) == {200: N}
    receipts = await rows(
        notifier_settings, "SELECT segment, status FROM receipts WHERE provider_message_id = $1 ORDER BY 1", pid
    )
    assert [(r["segment"], r["status"]) for r in receipts] == [(0, "delivered"), (1, "delivered"), (2, "delivered")]
    (message,) = await rows(notifier_settings, "SELECT status FROM messages WHERE send_sms_id = $1", sms.id)
    assert message["status"] == "delivered"
    assert await events_of(notifier_settings, sms.id, 2) == ["SmsDispatched", "SmsDelivered"]


# --- POST /v1/inbound/http -----------------------------------------------------------------------


async def test_stop_replies_from_one_number_opt_it_out_once_per_partner(
    client_for: ClientFactory, webhook: httpx.AsyncClient, notifier_settings: NotifierSettings, module_gateway: Gateway
) -> None:
    """A handset's STOP delivered many times at once (the gateway retries) for a number two partners messaged: each
    partner's ledger holds it once, and every answer names both partners."""
    phone = fresh_phone()
    partners = sorted(f"p-{uuid.uuid4().hex[:8]}" for _ in range(2))
    await dispatched(notifier_settings, module_gateway, *(command(partner=p, phone=phone) for p in partners))
    responses = await at_once(
        *(webhook.post("/v1/inbound/http", json={"from": phone, "text": "СТОП"}) for _ in range(N))
    )

    assert statuses(responses) == {200: N}
    assert {tuple(sorted(r.json()["opted_out_partners"])) for r in responses} == {tuple(partners)}
    for partner in partners:
        listed = (await client_for(partner).get("/v1/opt-outs")).json()["items"]
        assert [(o["phone"], o["source"]) for o in listed] == [(phone, "inbound")]


async def test_stop_replies_racing_opt_ins_never_fail(
    client_for: ClientFactory, webhook: httpx.AsyncClient, notifier_settings: NotifierSettings, module_gateway: Gateway
) -> None:
    """STOP replies and a partner's opt-ins of the same number at once: every request answers (no 5xx), and the
    ledger holds the number or not, once."""
    phone, partner = fresh_phone(), f"p-{uuid.uuid4().hex[:8]}"
    await dispatched(notifier_settings, module_gateway, command(partner=partner, phone=phone))
    client = client_for(partner)
    for _ in range(5):  # several rounds: the race is narrow
        stops = [webhook.post("/v1/inbound/http", json={"from": phone, "text": "stop"}) for _ in range(N // 2)]
        opt_ins = [client.delete(f"/v1/opt-outs/{phone}") for _ in range(N // 2)]
        responses = await at_once(*(request for pair in zip(stops, opt_ins, strict=True) for request in pair))

        assert set(statuses(responses)) <= {200, 204, 404}
        listed = [o["phone"] for o in (await client.get("/v1/opt-outs")).json()["items"]]
        assert listed in ([], [phone])


# --- POST /v1/messages/test ----------------------------------------------------------------------


async def test_test_sends_of_one_person_at_once_accept_exactly_what_the_hour_has_left(
    notifier_app: FastAPI, notifier_settings: NotifierSettings, module_gateway: Gateway
) -> None:
    """Twenty test sends at once by one person with ten left this hour: exactly ten are accepted and sent, the others
    429 `test_send_limited`, never a 5xx (the count is taken under a lock per person, in the database)."""
    partner, phone = f"p-{uuid.uuid4().hex[:8]}", fresh_phone()
    token = token_issuer().token(partner, ("read", "write"), client_id="console", actor="alice@example.com")
    transport = httpx.ASGITransport(app=notifier_app)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier", headers=headers) as alice:
        body = {"phone": phone, "text": "A test of the campaign"}
        responses = await at_once(*(alice.post("/v1/messages/test", json=body) for _ in range(N)))

    assert statuses(responses) == {201: 10, 429: N - 10}
    assert codes(responses, 429) == {"test_send_limited": N - 10}
    accepted = {r.json()["send_sms_id"] for r in responses if r.status_code == 201}

    async def all_sent() -> bool:
        return accepted <= set(module_gateway.sent)

    await wait_until(all_sent, what="the ten test sends at the gateway")
    assert sum(module_gateway.handset[key] for key in accepted) == 10
    assert sum(body["to"] == phone for body in module_gateway.bodies.values()) == 10
