"""The sending pipeline with the console provider, against real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from devtools.pytest_plugin import wait_until
from notifier.app import create_app
from notifier.outcomes import SendOutcome
from notifier.sending import Sending
from notifier.settings import NotifierSettings
from servicekit.app import parts_of
from servicekit.batching import GroupCommit

PHONE = "+79161234567"


async def test_a_command_is_sent_once_dispatched_and_delivered(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    first = kit.command(text="Заказ отправлен")  # Cyrillic: UCS-2
    await kit.publish(first, first)  # the campaign re-emitted it: same id
    await kit.wait_status(first.id, "delivered")
    await kit.publish(first)  # redelivered after it was handled: a no-op
    events = await kit.events(at_least=2)
    assert [type(e.data) for e in events] == [SmsDispatched, SmsDelivered]
    dispatched = events[0].data
    assert dispatched.send_sms_id == first.id and dispatched.provider == "console"
    assert dispatched.encoding == "ucs2" and dispatched.segments == 1
    assert events[0].causationid == first.id and events[0].key() == f"acme:{PHONE}".encode()
    assert kit.console_ids() == [first.id]

    acme: httpx.AsyncClient = client_for("acme")
    detail = (await acme.get(f"/v1/messages/{dispatched.message_id}")).json()
    assert detail["status"] == "delivered" and detail["attempts"] == 1
    assert [a["status"] for a in detail["attempt_log"]] == ["accepted"]
    assert [r["status"] for r in detail["receipts"]] == ["delivered"]
    # Another partner does not see it at all.
    assert (await client_for("other").get(f"/v1/messages/{dispatched.message_id}")).status_code == 404
    assert kit.console_ids() == [first.id]


async def test_a_command_due_now_starts_its_attempt_in_the_intake_transaction(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    command = kit.command()
    await kit.publish(command)
    await kit.wait_status(command.id, "delivered")
    page = (await client_for("acme").get("/v1/messages", params={"order_id": command.data.order_id})).json()
    detail = (await client_for("acme").get(f"/v1/messages/{page['items'][0]['message_id']}")).json()
    # now() is the transaction's start: the same instant means the message and its attempt committed together,
    # so the send started right after intake, without a second transaction or the dispatcher's next round.
    assert detail["attempt_log"][0]["started_at"] == detail["created_at"]
    assert kit.console_ids() == [command.id]


async def test_the_same_command_twice_in_one_batch_is_taken_in_once(kit: Any, notifier_app: FastAPI) -> None:
    command = kit.command()
    record = ConsumerRecord(
        topic=kit.settings.topic_send_sms, partition=0, offset=7, timestamp=0, timestamp_type=0, key=command.key(),
        value=command.to_bytes(), checksum=None, serialized_key_size=0, serialized_value_size=0, headers=(),
    )  # fmt: skip
    intake = parts_of(notifier_app.state.runtime, Sending).intake
    await intake.process([record, record])  # one transaction for both: it must not fail on the second
    await kit.wait_status(command.id, "delivered")
    assert kit.console_ids() == [command.id]
    assert len(await kit.rows("SELECT 1 FROM attempts a JOIN messages m USING (message_id) WHERE send_sms_id = $1",
                              command.id)) == 1  # fmt: skip


async def test_invalid_phone_opt_out_and_expiry_are_recorded_never_sent(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    acme = client_for("acme")
    assert (await acme.post("/v1/opt-outs/+79161112233")).status_code == 201
    landline = kit.command(phone="+74951234567")  # Moscow landline: valid E.164, no SMS
    opted_out = kit.command(phone="+79161112233")
    fine = kit.command(phone="+79161112234")
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = kit.command(requested_at=past, expires_in=timedelta(hours=1))
    await kit.publish(landline, opted_out, fine, expired)
    await kit.wait_status(fine.id, "delivered")
    assert await kit.status(landline.id) == "failed"
    assert await kit.status(opted_out.id) == "failed"
    assert await kit.status(expired.id) == "expired"
    events = await kit.events(at_least=5)
    failures = {e.data.send_sms_id: e.data for e in events if isinstance(e.data, SmsFailed)}
    assert {k: f.reason for k, f in failures.items()} == {
        landline.id: "invalid_phone",
        opted_out.id: "opted_out",
        expired.id: "expired",
    }
    assert all(f.attempts == 0 and f.provider is None for f in failures.values())
    assert kit.console_ids() == [fine.id]


async def test_consent_and_opt_outs_are_enforced_whatever_the_campaign_says(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    stopped = "+79161112233"
    assert (await client_for("acme").post(f"/v1/opt-outs/{stopped}")).status_code == 201
    refused = kit.command(phone="+79161110001", sms_consent=False)  # marketing, the customer said no
    unstated = kit.command(phone="+79161110002", sms_consent=None)  # marketing, an older sender: fail safe
    marketing_stopped = kit.command(phone=stopped)  # consented once, then sent STOP
    service = kit.command(phone="+79161110003", transactional=True, sms_consent=False)  # about the order: goes
    service_stopped = kit.command(phone=stopped, transactional=True, sms_consent=True)  # STOP blocks it too
    await kit.publish(refused, unstated, marketing_stopped, service, service_stopped)
    await kit.wait_status(service.id, "delivered")
    events = await kit.events(at_least=6)  # service: dispatched + delivered; four failures
    failures = {e.data.send_sms_id: e.data for e in events if isinstance(e.data, SmsFailed)}
    assert {k: f.reason for k, f in failures.items()} == {
        refused.id: "no_consent",
        unstated.id: "no_consent",
        marketing_stopped.id: "opted_out",
        service_stopped.id: "opted_out",
    }
    assert all(f.attempts == 0 and f.provider is None for f in failures.values())
    assert "absent" in failures[unstated.id].message
    # The provider never saw them: no attempt was even recorded.
    assert kit.console_ids() == [service.id]
    attempts = await kit.rows("SELECT m.send_sms_id FROM attempts a JOIN messages m USING (message_id)")
    assert [r["send_sms_id"] for r in attempts] == [service.id]
    rows = await kit.rows("SELECT send_sms_id, failure_reason FROM messages WHERE status = 'failed'")
    assert {r["send_sms_id"]: r["failure_reason"] for r in rows} == {k: f.reason for k, f in failures.items()}


async def test_an_opt_out_while_a_transactional_message_waits_stops_it(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    later = kit.command(not_before=datetime.now(UTC) + timedelta(seconds=2), transactional=True)
    await kit.publish(later)
    await kit.wait_status(later.id, "scheduled")
    assert (await client_for("acme").post(f"/v1/opt-outs/{PHONE}")).status_code == 201
    await kit.wait_status(later.id, "failed", timeout_s=10)
    (event,) = await kit.events(at_least=1)
    assert isinstance(event.data, SmsFailed) and event.data.reason == "opted_out"
    assert kit.console_ids() == []


async def test_not_before_waits_without_blocking_other_messages(kit: Any, notifier_app: FastAPI) -> None:
    later = kit.command(not_before=datetime.now(UTC) + timedelta(seconds=3), phone="+79161230001")
    now = kit.command(phone="+79161230002")
    await kit.publish(later, now)
    await kit.wait_status(now.id, "delivered")
    assert await kit.status(later.id) == "scheduled"  # quiet hours: stored, not sent
    assert kit.console_ids() == [now.id]
    await kit.wait_status(later.id, "delivered", timeout_s=10)
    (row,) = await kit.rows("SELECT updated_at, not_before FROM messages WHERE send_sms_id = $1", later.id)
    assert row["updated_at"] >= row["not_before"]
    assert kit.console_ids() == [now.id, later.id]


async def test_opt_out_while_scheduled_stops_the_message(kit: Any, notifier_app: FastAPI, client_for: Any) -> None:
    later = kit.command(not_before=datetime.now(UTC) + timedelta(seconds=2))
    await kit.publish(later)
    await kit.wait_status(later.id, "scheduled")
    assert (await client_for("acme").post(f"/v1/opt-outs/{PHONE}")).status_code == 201
    await kit.wait_status(later.id, "failed", timeout_s=10)
    (event,) = await kit.events(at_least=1)
    assert isinstance(event.data, SmsFailed) and event.data.reason == "opted_out"
    assert kit.console_ids() == []


async def test_malformed_commands_are_dead_lettered_and_the_consumer_goes_on(kit: Any, notifier_app: FastAPI) -> None:
    good = kit.command()
    await kit.publish(raw=b"{not json")
    await kit.publish(raw=b'{"specversion": "1.0", "id": "x1", "type": "sms.send-requested.v1", "source": "/t"}')
    await kit.publish(good)
    await kit.wait_status(good.id, "delivered")
    dead = await kit.dead_letters()
    reasons = sorted(dict(r.headers)["dlq-reason"].decode() for r in dead)
    assert reasons == ["invalid_envelope", "malformed_json"]
    assert all(dict(r.headers)["dlq-original-topic"].decode() == kit.settings.topic_send_sms for r in dead)


async def test_a_send_frees_its_slot_once_the_provider_answered_not_once_its_outcome_is_recorded(
    kit: Any, notifier_settings: NotifierSettings
) -> None:
    """`MAX_IN_FLIGHT` counts provider calls. A send used to hold its slot until its outcome's transaction
    committed: at 1,000 events/s on the benchmark that wait took all 256 slots and new messages queued behind it
    (issue 34). Here one slot, and the outcomes are held back: both messages still go to the provider."""
    app = create_app(notifier_settings.model_copy(update={"max_in_flight": 1}))
    async with app.router.lifespan_context(app):
        dispatcher = parts_of(app.state.runtime, Sending).dispatcher
        recorded = asyncio.Event()

        async def held_back(outcomes: Sequence[SendOutcome]) -> None:
            await recorded.wait()
            await dispatcher.outcomes.record(outcomes)

        dispatcher._recording = GroupCommit(held_back)
        first, second = kit.command(), kit.command()
        await kit.publish(first, second)

        async def both_sent() -> bool:
            return sorted(kit.console_ids()) == sorted([first.id, second.id])

        await wait_until(both_sent, what="both messages at the provider")
        assert [await kit.status(first.id), await kit.status(second.id)] == ["sending", "sending"]
        recorded.set()
        await kit.wait_status(first.id, "delivered")
        await kit.wait_status(second.id, "delivered")
