"""Never twice: a crash between the provider's acceptance and our record, and a thousand commands with duplicates."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from contracts.sms import SmsDelivered, SmsDispatched
from notifier.app import create_app
from notifier.providers.console import ConsoleProvider
from notifier.settings import NotifierSettings


@pytest.mark.parametrize("when", ["after_accept", "before_send"])
async def test_a_crash_around_the_provider_call_still_sends_exactly_once(
    kit: Any, notifier_settings: NotifierSettings, crash_around: Any, when: str
) -> None:
    # The first instance polls rarely, so only the fresh instance below settles the orphaned attempt.
    settings = notifier_settings.model_copy(update={"inflight_lease_s": 1.0, "dispatch_poll_interval_s": 60.0})
    crashing = crash_around(ConsoleProvider(settings.console_outbox_file, auto_deliver=False), when)
    first_app = create_app(settings, provider=crashing)
    sms = kit.command()
    async with first_app.router.lifespan_context(first_app):
        await kit.publish(sms)
        await asyncio.wait_for(crashing.crashed.wait(), 15)
    assert await kit.status(sms.id) == "sending"  # the attempt was recorded before the provider call
    assert kit.console_ids() == ([sms.id] if when == "after_accept" else [])

    restarted = create_app(settings.model_copy(update={"dispatch_poll_interval_s": 0.2}))
    async with restarted.router.lifespan_context(restarted):
        # Found at the provider: dispatched without a new send (so no new console receipt either).
        final = "dispatched" if when == "after_accept" else "delivered"
        await kit.wait_status(sms.id, final, timeout_s=20)
        events = await kit.events(at_least=1 if when == "after_accept" else 2)
    assert kit.console_ids() == [sms.id]  # the provider saw the id exactly once
    expected = {SmsDispatched: 1} if when == "after_accept" else {SmsDispatched: 1, SmsDelivered: 1}
    assert Counter(type(e.data) for e in events) == expected
    (attempt, *later) = await kit.rows(
        "SELECT a.status, a.detail FROM attempts a JOIN messages m USING (message_id) "
        "WHERE m.send_sms_id = $1 ORDER BY attempt",
        sms.id,
    )
    if when == "after_accept":
        assert attempt["status"] == "reconciled" and later == []  # found at the provider, not resent
    else:
        assert attempt["status"] == "unknown" and [a["status"] for a in later] == ["accepted"]


async def test_a_thousand_commands_with_duplicates_each_reach_each_phone_once(
    kit: Any, notifier_settings: NotifierSettings, summary: Any
) -> None:
    phones = [f"+7916{n:07d}" for n in range(1_000_001, 1_000_101)]  # 100 mobile numbers
    commands = [kit.command(phone=phones[n % 100], event=f"event-{n}", order=f"order-{n}") for n in range(1000)]
    duplicates = commands[::4]  # a quarter re-emitted by the campaign
    app = create_app(notifier_settings.model_copy(update={"console_auto_deliver": False}))
    started = time.monotonic()
    async with app.router.lifespan_context(app):
        await kit.publish(*commands[:500], *duplicates, *commands[500:], *duplicates[:50])

        async def all_dispatched() -> bool:
            (row,) = await kit.rows("SELECT count(*) AS n FROM messages WHERE status = 'dispatched'")
            return int(row["n"]) == 1000

        from devtools.pytest_plugin import wait_until

        await wait_until(all_dispatched, timeout_s=60, what="1000 dispatched messages")
        elapsed = time.monotonic() - started
        events = await kit.events(at_least=1000)
    sent = kit.console_ids()
    assert len(sent) == 1000 and set(sent) == {c.id for c in commands}
    per_phone = Counter(c.data.phone for c in commands)
    lines = kit.settings.console_outbox_file.read_text().splitlines()
    import json

    assert Counter(json.loads(line)["to"] for line in lines) == per_phone
    assert len(events) == 1000 and {e.data.send_sms_id for e in events} == {c.id for c in commands}
    (row,) = await kit.rows("SELECT count(*) AS n, sum(attempts) AS a FROM messages")
    assert row["n"] == 1000 and row["a"] == 1000
    summary(f"notifier: 1000 commands + {len(duplicates) + 50} duplicates -> 1000 SMS in {elapsed:.1f}s")


async def test_an_outcome_lost_to_a_database_outage_is_settled_after_the_grace_not_the_lease(
    kit: Any, notifier_settings: NotifierSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live instance knows no send of that attempt is under way: it reconciles it at once (lease: 300 s)."""
    from notifier.outcomes import OutcomeRecorder

    record = OutcomeRecorder.record
    lost: list[Any] = []

    async def database_away_once(self: OutcomeRecorder, outcomes: Any) -> None:
        if not lost:
            lost.extend(outcomes)
            raise OSError("[Errno 111] Connection refused")  # as when PostgreSQL was stopped
        await record(self, outcomes)

    monkeypatch.setattr(OutcomeRecorder, "record", database_away_once)
    settings = notifier_settings.model_copy(
        update={"inflight_lease_s": 300.0, "own_orphan_grace_s": 1.0, "dispatch_poll_interval_s": 0.2}
    )
    app = create_app(settings, provider=ConsoleProvider(settings.console_outbox_file, auto_deliver=False))
    sms = kit.command()
    async with app.router.lifespan_context(app):
        await kit.publish(sms)
        await kit.wait_status(sms.id, "dispatched", timeout_s=30)  # found at the provider by reconciliation
    assert lost and kit.console_ids() == [sms.id]  # sent once, never again
    (attempt,) = await kit.rows(
        "SELECT a.status FROM attempts a JOIN messages m USING (message_id) WHERE m.send_sms_id = $1", sms.id
    )
    assert attempt["status"] == "reconciled"
