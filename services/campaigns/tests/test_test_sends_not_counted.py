"""A marketer's test send (the notifier's POST /v1/messages/test) is no campaign's SMS: its outcome events, which say
`is_test`, count in no campaign's stats, even when they name the campaign being tested."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from contracts.envelope import Envelope
from contracts.sms import SmsDelivered, SmsDispatched, SmsEncoding, SmsFailed
from devtools.pytest_plugin import wait_until

Activate = Callable[..., Awaitable[str]]
MakeChange = Callable[..., Envelope[Any]]


async def test_a_test_sends_outcomes_count_in_no_campaigns_stats(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    campaign_id = await active_campaign(reentry="every_time")
    await topics.publish(make_change(order_id="o-1"))
    (sent,) = [s.data for s in await topics.wait_for_send_sms(1)]

    def report(kind: type[Any], send_sms_id: str, *, is_test: bool, **extra: Any) -> Envelope[Any]:
        common = {
            "message_id": f"m-{send_sms_id}", "send_sms_id": send_sms_id, "partner_id": "demo",
            "campaign_id": campaign_id, "order_id": sent.order_id, "phone": sent.phone,
            "occurred_at": datetime(2026, 3, 2, 9, 1, tzinfo=UTC), "is_test": is_test,
        }  # fmt: skip
        return Envelope.wrap(kind(**common, **extra), source="/services/notifier", partner_id="demo")

    dispatched = {"provider": "fake", "segments": 1, "encoding": SmsEncoding.GSM7}
    tests = [
        report(SmsDispatched, "test-1", is_test=True, **dispatched),
        report(SmsDelivered, "test-1", is_test=True, provider="fake"),
        report(SmsFailed, "test-2", is_test=True, reason="provider_rejected", message="refused", attempts=1),
    ]
    for envelope in [*tests, report(SmsDispatched, sent.idempotency_key, is_test=False, **dispatched)]:
        await topics.publish_sms_event(envelope)  # one key (one phone): consumed in this order, the real one last

    async def counted() -> bool:
        return bool((await demo.get(f"/v1/campaigns/{campaign_id}/stats")).json()["sms_sent"] == 1)

    await wait_until(counted, what="the campaign's own SMS in its stats")
    body = (await demo.get(f"/v1/campaigns/{campaign_id}/stats")).json()
    assert (body["sms_requested"], body["sms_sent"], body["sms_delivered"], body["sms_failed"]) == (1, 1, 0, 0)
    assert body["sms_failed_by_reason"] == {}
