"""Replaying notifier.send-sms.v1.dlq: a new round for a message that failed before any provider took it,
sent once however often the replay comes; refused for a message delivered, dispatched or expired."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY

from contracts.envelope import Envelope
from contracts.sms import SendSms, SmsDelivered, SmsDispatched, SmsFailed
from devtools import ops
from devtools.kafka_io import committed_offsets
from devtools.pytest_plugin import read_topic, wait_until
from notifier.app import create_app
from notifier.settings import NotifierSettings

OUTAGE, OTHER = "+79161230001", "+79161230002"


async def consumed_all(kit: Any) -> None:
    """Every command on notifier.send-sms.v1 taken in and its offset committed."""
    topic = kit.settings.topic_send_sms

    async def done() -> bool:
        published = len(await read_topic(kit.settings.kafka_bootstrap_servers, topic))
        offsets = await committed_offsets(kit.settings.kafka_bootstrap_servers, kit.settings.consumer_group)
        return sum(o for tp, o in offsets.items() if tp.topic == topic) >= published

    await wait_until(done, timeout_s=30, what="the notifier to commit every command")


async def replay_by_hand(kit: Any, command: Envelope[SendSms], replay_of: str) -> None:
    """What `make ops ARGS="dlq replay ..."` publishes, for a message that has no dead letter to replay."""
    headers = [("replay-of", replay_of.encode())]
    topic = kit.settings.topic_send_sms
    await kit.producer.send_and_wait(topic, command.to_bytes(), key=command.key(), headers=headers)


async def replays(kit: Any, command: Envelope[SendSms]) -> list[tuple[str, str, str | None]]:
    rows = await kit.rows(
        "SELECT r.replay_of, r.outcome, r.reason FROM replays r JOIN messages m USING (message_id) "
        "WHERE m.send_sms_id = $1 ORDER BY r.replayed_at",
        command.id,
    )
    return [(r["replay_of"], r["outcome"], r["reason"]) for r in rows]


async def test_a_send_sms_dead_lettered_by_a_provider_outage_is_sent_once_when_replayed(
    kit: Any, gateway: Any, http_settings: NotifierSettings
) -> None:
    gateway.plan[OUTAGE] = ["503"] * 4  # the gateway is down for two attempts, and again for two more
    app = create_app(http_settings.model_copy(update={"max_attempts": 2}))
    outage = kit.command(phone=OUTAGE)
    dlq = "notifier.send-sms.v1.dlq"

    async def dead_letters(count: int) -> list[Any]:
        async def there() -> bool:
            return len(await kit.dead_letters()) == count

        await wait_until(there, what=f"{count} dead letters")
        return list(await kit.dead_letters())

    async with app.router.lifespan_context(app):
        await kit.publish(outage)
        await kit.wait_status(outage.id, "failed", timeout_s=20)
        (first,) = await dead_letters(1)
        assert dict(first.headers)["dlq-reason"] == b"provider_error" and first.value == outage.to_bytes()
        assert gateway.handset == Counter()

        await ops.cmd_dlq_replay(kit.settings, dlq, [])  # ops replays while the gateway is still down
        _, second = await dead_letters(2)  # a new round with retries of its own, dead-lettered again
        assert await kit.status(outage.id) == "failed"

        await ops.cmd_dlq_replay(kit.settings, dlq, [])  # both dead letters: the first was applied already
        await kit.wait_status(outage.id, "dispatched", timeout_s=20)
        round_key = f"{outage.id}.replay-2"  # new to the gateway, which de-duplicates on the old keys
        assert gateway.handset == Counter({round_key: 1}) and gateway.bodies[round_key]["id"] == round_key

        await ops.cmd_dlq_replay(kit.settings, dlq, [])  # replayed again: each dead letter applies once
        await replay_by_hand(kit, outage, "another-dlq/0/7")  # a replay of a message a provider took: refused
        await consumed_all(kit)
        assert gateway.handset == Counter({round_key: 1})
        keys = [key for key, _, _ in gateway.requests]
        assert keys == [outage.id] * 2 + [f"{outage.id}.replay-1"] * 2 + [round_key]
        assert await kit.status(outage.id) == "dispatched"
        events = await kit.events(at_least=3)

    first_of, second_of = (f"{kit.settings.topic_send_sms_dlq}/{d.partition}/{d.offset}" for d in (first, second))
    assert await replays(kit, outage) == [
        (first_of, "accepted", None),
        (second_of, "accepted", None),
        ("another-dlq/0/7", "refused", "dispatched"),
    ]
    assert [(type(e.data), getattr(e.data, "reason", None)) for e in events] == [
        (SmsFailed, "provider_error"),
        (SmsFailed, "provider_error"),  # the first replay's round: a new event, not a duplicate of the first
        (SmsDispatched, None),
    ]
    assert len({e.id for e in events}) == 3
    attempts = await kit.rows("SELECT attempt, status FROM attempts ORDER BY attempt")
    assert [r["status"] for r in attempts] == ["failed"] * 4 + ["accepted"]


async def test_replays_of_delivered_or_expired_messages_are_refused_and_a_lifted_refusal_sends(
    kit: Any, notifier_app: FastAPI, client_for: Any
) -> None:
    acme = client_for("acme")
    delivered = kit.command(phone=OUTAGE)
    lapsing = kit.command(phone="+79161230003", expires_in=timedelta(seconds=3))  # refused, then expires
    expired = kit.command(requested_at=datetime.now(UTC) - timedelta(hours=2), expires_in=timedelta(hours=1))
    lifted = kit.command(phone=OTHER)  # refused: opted out; the customer opts back in
    for phone in ("+79161230003", OTHER):
        assert (await acme.post(f"/v1/opt-outs/{phone}")).status_code == 201

    def replays_counted(outcome: str, reason: str) -> float:
        labels = {"outcome": outcome, "reason": reason}
        return REGISTRY.get_sample_value("sms_replays_total", labels) or 0.0

    refused_delivered, duplicates = replays_counted("refused", "delivered"), replays_counted("duplicate", "")
    await kit.publish(delivered, lapsing, expired, lifted)
    await kit.wait_status(delivered.id, "delivered")
    for command, status in ((lapsing, "failed"), (expired, "expired"), (lifted, "failed")):
        await kit.wait_status(command.id, status)
    await replay_by_hand(kit, lifted, "dlq/0/3")  # still opted out: refused, the dead letter is not used up
    await consumed_all(kit)
    assert await replays(kit, lifted) == [("dlq/0/3", "refused", "opted_out")]
    for phone in ("+79161230003", OTHER):
        assert (await acme.delete(f"/v1/opt-outs/{phone}")).status_code == 204
    await asyncio.sleep(max(0.0, (lapsing.data.expires_at - datetime.now(UTC)).total_seconds()) + 0.1)

    for n, command in enumerate((delivered, lapsing, expired, lifted)):
        await replay_by_hand(kit, command, f"dlq/0/{n}")
    await kit.wait_status(lifted.id, "delivered")
    await replay_by_hand(kit, lifted, "dlq/0/3")  # the same replay delivered again
    await consumed_all(kit)

    assert kit.console_ids() == [delivered.id, f"{lifted.id}.replay-1"]
    assert await replays(kit, delivered) == [("dlq/0/0", "refused", "delivered")]
    assert await replays(kit, lapsing) == [("dlq/0/1", "refused", "expired")]
    assert await replays(kit, expired) == [("dlq/0/2", "refused", "expired")]
    assert await replays(kit, lifted) == [("dlq/0/3", "accepted", None)]
    assert [await kit.status(c.id) for c in (delivered, lapsing, expired)] == ["delivered", "failed", "expired"]
    events = await kit.events(at_least=7)  # delivered 2, lapsing 1, expired 1, lifted 3
    of_lifted = [(type(e.data), getattr(e.data, "reason", None)) for e in events if e.data.send_sms_id == lifted.id]
    assert of_lifted == [(SmsFailed, "opted_out"), (SmsDispatched, None), (SmsDelivered, None)]
    assert len({e.id for e in events}) == len(events)

    (row,) = await kit.rows("SELECT message_id::text FROM messages WHERE send_sms_id = $1", delivered.id)
    detail = (await acme.get(f"/v1/messages/{row['message_id']}")).json()
    assert detail["replays"][0]["outcome"] == "refused" and detail["replays"][0]["reason"] == "delivered"
    assert detail["replay_round"] == 0
    assert replays_counted("refused", "delivered") == refused_delivered + 1
    assert replays_counted("duplicate", "") == duplicates + 1
