"""The rules, without I/O: the schedule and what follows an attempt, URLs, filters, held changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from webhooks.domain import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    DisabledCause,
    MessageState,
    Outcome,
    check_url,
    decide,
    held_back,
    new_secret,
    paused_until,
    wants,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CAP = timedelta(hours=1)
FIVE_DAYS = timedelta(days=5)


def test_the_schedule_is_svix_s_and_ends_after_eight_attempts() -> None:
    assert [d.total_seconds() for d in RETRY_DELAYS] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert MAX_ATTEMPTS == 8
    for attempts, delay in enumerate(RETRY_DELAYS, start=1):
        decision = decide(Outcome(500), attempts, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
        assert decision.state is MessageState.PENDING and decision.next_attempt_at == NOW + delay
    last = decide(Outcome(None, "timeout"), 8, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert last.state is MessageState.FAILED and last.next_attempt_at is None


def test_retry_after_replaces_the_schedule_capped() -> None:
    soon = decide(Outcome(429, retry_after_s=120), 1, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert soon.next_attempt_at == NOW + timedelta(seconds=120)
    late = decide(Outcome(503, retry_after_s=10**6), 1, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert late.next_attempt_at == NOW + CAP


def test_a_failure_pauses_the_endpoint_a_tenth_of_its_streak_between_the_bounds() -> None:
    def pause(outcome: Outcome, streak: timedelta) -> timedelta | None:
        until = paused_until(
            outcome,
            NOW,
            NOW - streak,
            first_pause=timedelta(seconds=1),
            longest_pause=timedelta(minutes=1),
            retry_after_cap=CAP,
        )
        return None if until is None else until - NOW

    assert pause(Outcome(204), timedelta(days=1)) is None  # a success: not paused, all its slots
    assert pause(Outcome(None, "refused"), timedelta(0)) == timedelta(seconds=1)  # a new streak
    assert pause(Outcome(500), timedelta(minutes=5)) == timedelta(seconds=30)
    assert pause(Outcome(500), timedelta(days=1)) == timedelta(minutes=1)
    assert pause(Outcome(429, retry_after_s=120), timedelta(0)) == timedelta(minutes=2)  # it asked for a rest
    assert pause(Outcome(503, retry_after_s=10**6), timedelta(0)) == CAP


def test_a_success_ends_the_streak_410_and_five_days_disable() -> None:
    ok = decide(Outcome(204), 3, NOW, NOW - timedelta(days=4), retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert ok.state is MessageState.SUCCEEDED and ok.failing_since is None and ok.disable_reason is None
    gone = decide(Outcome(410), 1, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert gone.state is MessageState.FAILED and gone.disable_reason == "the endpoint answered 410 Gone"
    assert gone.disable_cause is DisabledCause.GONE_410
    first = decide(Outcome(500), 1, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert first.failing_since == NOW and first.disable_reason is None and first.disable_cause is None
    almost = NOW - FIVE_DAYS + timedelta(seconds=1)
    assert decide(Outcome(500), 1, NOW, almost, retry_after_cap=CAP, disable_after=FIVE_DAYS).disable_reason is None
    over = decide(Outcome(500), 1, NOW, NOW - FIVE_DAYS, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert over.disable_reason is not None and "5 days" in over.disable_reason
    assert over.disable_cause is DisabledCause.FAILING_5_DAYS
    redirect = decide(Outcome(302), 1, NOW, None, retry_after_cap=CAP, disable_after=FIVE_DAYS)
    assert redirect.state is MessageState.PENDING  # a redirect is not followed: a failed attempt


@pytest.mark.parametrize(
    "url", ["ftp://x.example/", "https://u:p@x.example/", "https://x.example/#f", "https:///x", "https://x:99999/"]
)
def test_urls_that_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


def test_filters_and_held_changes() -> None:
    assert wants(["order.status_changed"], None, "order.status_changed", "payment")
    assert not wants(["order.status_changed"], "delivery", "order.status_changed", "payment")
    assert wants(["sms.failed"], "delivery", "sms.failed", None)  # SMS events have no status type
    assert not wants(["sms.failed"], None, "sms.delivered", None)
    assert held_back(3, [2, 3]) and not held_back(2, [2, 3]) and not held_back(1, [])
    assert new_secret().startswith("whsec_") and new_secret() != new_secret()
