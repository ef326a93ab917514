"""The SMPP provider against a real SMPP server (smpp34) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from contracts.sms import SmsDelivered, SmsDispatched
from notifier.app import create_app
from notifier.domain import gsm7_bytes
from notifier.settings import NotifierSettings

A, B = "+79161230001", "+79161230002"


@pytest.fixture
async def smpp_app(smpp_settings: NotifierSettings) -> AsyncIterator[FastAPI]:
    app = create_app(smpp_settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_long_message_goes_as_udh_segments_and_their_receipts_merge(
    kit: Any, smsc: Any, smpp_app: FastAPI
) -> None:
    text = "Ваш заказ №42 отправлен. " * 8  # 200 characters, Cyrillic: 3 UCS-2 segments
    long, short = kit.command(phone=A, text=text), kit.command(phone=B, text="Shipped {today} €5")
    await kit.publish(long, short)
    await kit.wait_status(long.id, "dispatched")
    await kit.wait_status(short.id, "dispatched")

    segments = [s for s in smsc.submits if s.destination_addr == A.lstrip("+")]
    assert len(segments) == 3
    assert all(s.esm_class & 0x40 and s.data_coding == 8 and s.registered_delivery == 1 for s in segments)
    headers = [s.short_message[:6] for s in segments]
    assert {h[:3] for h in headers} == {b"\x05\x00\x03"} and len({h[3] for h in headers}) == 1
    assert [(h[4], h[5]) for h in headers] == [(3, 1), (3, 2), (3, 3)]
    assert "".join(s.short_message[6:].decode("utf-16-be") for s in segments) == text
    assert all(len(s.short_message) <= 140 for s in segments)
    (plain,) = [s for s in smsc.submits if s.destination_addr == B.lstrip("+")]
    assert plain.esm_class == 0 and plain.data_coding == 0 and plain.short_message == gsm7_bytes("Shipped {today} €5")
    assert plain.source_addr == "Notifier" and plain.source_addr_ton == 5

    (esme,) = smsc.sessions.values()
    ids = [f"smsc-{n}" for n in range(1, 5)]
    by_id = dict(zip(ids, smsc.submits, strict=True))
    long_ids = [i for i, s in by_id.items() if s.destination_addr == A.lstrip("+")]
    await smsc.receipt(esme, by_id[long_ids[0]], long_ids[0], "DELIVRD")
    await smsc.receipt(esme, by_id[long_ids[1]], long_ids[1], "DELIVRD")
    await smsc.receipt(esme, by_id[long_ids[2]], long_ids[2], "ENROUTE")
    await asyncio.sleep(0.5)
    assert await kit.status(long.id) == "dispatched"  # one segment still en route
    await smsc.receipt(esme, by_id[long_ids[2]], long_ids[2], "DELIVRD")
    await kit.wait_status(long.id, "delivered")
    await smsc.receipt(esme, by_id[long_ids[0]], long_ids[0], "ENROUTE")  # late: changes nothing
    events = await kit.events(at_least=3)
    assert sorted(type(e.data).__name__ for e in events) == ["SmsDelivered", "SmsDispatched", "SmsDispatched"]
    delivered = next(e.data for e in events if isinstance(e.data, SmsDelivered))
    assert delivered.send_sms_id == long.id and delivered.provider == "smpp"
    dispatched = next(e.data for e in events if isinstance(e.data, SmsDispatched) and e.data.send_sms_id == long.id)
    assert dispatched.segments == 3 and dispatched.encoding == "ucs2"
    assert await kit.status(long.id) == "delivered"


async def test_throttling_and_refusals(kit: Any, smsc: Any, smpp_app: FastAPI) -> None:
    smsc.plan[A.lstrip("+")] = ["throttle", "ok"]
    smsc.plan[B.lstrip("+")] = ["refuse"]
    throttled, refused = kit.command(phone=A), kit.command(phone=B)
    await kit.publish(throttled, refused)
    await kit.wait_status(throttled.id, "dispatched", timeout_s=20)
    await kit.wait_status(refused.id, "failed")
    (row,) = await kit.rows("SELECT attempts FROM messages WHERE send_sms_id = $1", throttled.id)
    assert row["attempts"] == 2
    (failed,) = await kit.rows("SELECT failure_reason, attempts FROM messages WHERE send_sms_id = $1", refused.id)
    assert failed["failure_reason"] == "provider_rejected" and failed["attempts"] == 1
    assert len(await kit.dead_letters()) == 1


async def test_the_session_is_rebound_after_the_smsc_drops_it(kit: Any, smsc: Any, smpp_app: FastAPI) -> None:
    smsc.plan[A.lstrip("+")] = ["drop"]
    first = kit.command(phone=A)
    await kit.publish(first)
    await kit.wait_status(first.id, "dispatched")

    async def rebound() -> bool:
        return smsc.binds >= 2 and len(smsc.sessions) == 1

    from devtools.pytest_plugin import wait_until

    await wait_until(rebound, timeout_s=15, what="a second bind")
    smsc.auto_receipts = True
    second = kit.command(phone=B)
    await kit.publish(second)
    await kit.wait_status(second.id, "delivered", timeout_s=20)
    assert [s.destination_addr for s in smsc.submits] == [A.lstrip("+"), B.lstrip("+")]


async def test_an_inbound_stop_over_smpp_opts_the_number_out(kit: Any, smsc: Any, smpp_app: FastAPI) -> None:
    first = kit.command(phone=A)
    await kit.publish(first)
    await kit.wait_status(first.id, "dispatched")
    await smsc.mobile_originated(A, "ОТПИСКА")

    async def opted_out() -> bool:
        found = await kit.rows("SELECT partner_id, phone, source FROM opt_outs")
        return [tuple(r) for r in found] == [("acme", A, "inbound")]

    from devtools.pytest_plugin import wait_until

    await wait_until(opted_out, timeout_s=10, what="the STOP reply to opt the number out")


async def test_after_a_crash_an_smpp_attempt_of_unknown_outcome_is_not_resent(
    kit: Any, smsc: Any, smpp_settings: NotifierSettings, crash_around: Any
) -> None:
    from notifier.providers.smpp import SmppProvider

    settings = smpp_settings.model_copy(update={"inflight_lease_s": 1.0, "dispatch_poll_interval_s": 60.0})
    crashing = crash_around(SmppProvider.from_settings(settings), "after_accept")
    first = create_app(settings, provider=crashing)
    sms = kit.command(phone=A)
    async with first.router.lifespan_context(first):
        await kit.publish(sms)
        await asyncio.wait_for(crashing.crashed.wait(), 15)

    restarted = create_app(settings.model_copy(update={"dispatch_poll_interval_s": 0.2}))
    async with restarted.router.lifespan_context(restarted):
        await kit.wait_status(sms.id, "failed", timeout_s=20)
        (event,) = await kit.events(at_least=1)
    assert len(smsc.submits) == 1  # SMPP cannot be asked, so it is not sent a second time
    assert event.data.reason == "provider_error" and "outcome unknown" in event.data.message
