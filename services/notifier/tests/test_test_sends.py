"""POST /v1/messages/test: a marketer's test send goes through the provider like any SMS, is marked as a test in the
list, its detail and its events, is refused for an opted-out number, and is limited per person (act.sub)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.sms import SmsDelivered, SmsDispatched
from devtools.pytest_plugin import token_issuer
from notifier.app import create_app
from notifier.domain import wait_before_test_send
from notifier.settings import NotifierSettings

PHONE = "+79161234567"
Person = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def person(notifier_app: FastAPI) -> AsyncIterator[Person]:
    """`person("alice@acme")`: a client holding the console's kind of token, acting for that person (act.sub)."""
    clients: list[httpx.AsyncClient] = []

    def make(
        actor: str, partner: str = "acme", scopes: tuple[str, ...] = ("read", "write"), app: FastAPI | None = None
    ) -> httpx.AsyncClient:
        token = token_issuer().token(partner, scopes, client_id="console", actor=actor)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app or notifier_app),
            base_url="http://notifier",
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def body_of(phone: str = PHONE, **extra: Any) -> dict[str, Any]:
    return {"phone": phone, "text": "Your order has shipped", "campaign_id": "c-1", **extra}


async def test_a_test_send_goes_through_the_provider_marked_as_a_test(
    kit: Any, person: Person, notifier_settings: NotifierSettings
) -> None:
    alice = person("alice@acme")
    answer = await alice.post("/v1/messages/test", json=body_of("+7 916 123-45-67", sender="DemoShop"))

    assert answer.status_code == 201, answer.text
    sent = answer.json()
    assert (sent["phone"], sent["is_test"], sent["campaign_id"], sent["sender"]) == (PHONE, True, "c-1", "DemoShop")
    await kit.wait_status(sent["send_sms_id"], "delivered")
    # The console provider's outbox file: what the provider was given, as for any SMS.
    lines = [json.loads(line) for line in notifier_settings.console_outbox_file.read_text().splitlines()]
    assert [(line["to"], line["text"], line["from"]) for line in lines] == [
        (PHONE, "Your order has shipped", "DemoShop")
    ]

    detail = (await alice.get(f"/v1/messages/{sent['message_id']}")).json()
    assert (detail["is_test"], detail["status"], len(detail["attempt_log"])) == (True, "delivered", 1)
    tests = (await alice.get("/v1/messages", params={"is_test": "true"})).json()["items"]
    assert [m["message_id"] for m in tests] == [sent["message_id"]]
    assert (await alice.get("/v1/messages", params={"is_test": "false"})).json()["items"] == []

    # Its outcome events say it is a test, so that no campaign counts it (campaigns' record_sms_events skips them).
    events = [e.data for e in await kit.events(at_least=2) if e.data.send_sms_id == sent["send_sms_id"]]
    assert [type(e) for e in events] == [SmsDispatched, SmsDelivered]
    assert all(e.is_test for e in events)


async def test_an_opted_out_number_is_refused_naming_the_phone_and_not_counted(
    kit: Any, person: Person, client_for: Any, notifier_settings: NotifierSettings
) -> None:
    assert (await client_for("acme").post(f"/v1/opt-outs/{PHONE}")).status_code == 201
    alice = person("alice@acme")

    refused = await alice.post("/v1/messages/test", json=body_of("+7 (916) 123 45 67"))

    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "opted_out"
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [("phone", "opted_out")]
    assert await kit.rows("SELECT 1 FROM messages") == []
    assert await kit.rows("SELECT 1 FROM test_sends") == []  # a refusal uses none of the hour's tests

    not_mobile = await alice.post("/v1/messages/test", json=body_of("+74951234567"))  # a Moscow landline
    assert (not_mobile.status_code, not_mobile.json()["code"]) == (422, "invalid_phone")
    assert not_mobile.json()["errors"][0]["field"] == "phone"
    assert not notifier_settings.console_outbox_file.exists()


async def test_ten_an_hour_per_person_then_429_saying_when(kit: Any, person: Person, client_for: Any) -> None:
    alice, bob = person("alice@acme"), person("bob@acme")
    for _ in range(10):
        assert (await alice.post("/v1/messages/test", json=body_of())).status_code == 201

    limited = await alice.post("/v1/messages/test", json=body_of())

    assert limited.status_code == 429
    problem = limited.json()
    assert problem["code"] == "test_send_limited"
    assert 3590 <= problem["retry_after_s"] <= 3600
    assert limited.headers["Retry-After"] == str(problem["retry_after_s"])
    assert datetime.fromisoformat(problem["retry_at"]) > datetime.now(UTC) + timedelta(minutes=59)
    assert len(await kit.rows("SELECT 1 FROM messages WHERE is_test")) == 10
    # The limit is each person's: another marketer of the partner still sends; an API client's own tokens (no
    # act.sub) count as one person of their own.
    assert (await bob.post("/v1/messages/test", json=body_of())).status_code == 201
    assert (await client_for("acme").post("/v1/messages/test", json=body_of())).status_code == 201
    # A read-only token cannot send.
    viewer = person("viewer@acme", scopes=("read",))
    assert (await viewer.post("/v1/messages/test", json=body_of())).status_code == 403


async def test_the_limit_is_shared_by_every_instance(
    kit: Any, person: Person, notifier_settings: NotifierSettings
) -> None:
    """Two notifier instances on one database: the person's tests through either count together (the count is in
    PostgreSQL, not in a process); an hour later the slots are free again."""
    second = create_app(notifier_settings)
    async with second.router.lifespan_context(second):
        here, there = person("carol@acme"), person("carol@acme", app=second)
        for client in (here, there) * 5:
            assert (await client.post("/v1/messages/test", json=body_of())).status_code == 201

        assert (await there.post("/v1/messages/test", json=body_of())).status_code == 429
        assert (await here.post("/v1/messages/test", json=body_of())).status_code == 429

        await kit.rows("UPDATE test_sends SET sent_at = sent_at - interval '61 minutes' WHERE actor = 'carol@acme'")
        assert (await there.post("/v1/messages/test", json=body_of())).status_code == 201


def test_the_window_slides() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    sends = [now - timedelta(minutes=m) for m in (70, 50, 40, 5)]
    assert wait_before_test_send(sends, per_hour=4, now=now) is None  # the 70-minute-old one is out of the hour
    assert wait_before_test_send(sends, per_hour=3, now=now) == timedelta(minutes=10)
    assert wait_before_test_send(sends[1:], per_hour=1, now=now) == timedelta(minutes=55)


async def test_a_test_message_is_found_by_id_only_by_its_partner(person: Person) -> None:
    sent = (await person("alice@acme").post("/v1/messages/test", json=body_of())).json()
    elsewhere = person("eve@other", partner="other")
    assert (await elsewhere.get(f"/v1/messages/{sent['message_id']}")).status_code == 404
    assert (await elsewhere.get("/v1/messages", params={"is_test": "true"})).json()["items"] == []


async def test_a_test_send_asked_without_a_phone_or_text_is_refused(person: Person) -> None:
    alice = person(f"a-{uuid.uuid4().hex[:6]}@acme")
    missing = await alice.post("/v1/messages/test", json={"phone": PHONE, "text": ""})
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["errors"]} == {"text"}
