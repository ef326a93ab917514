"""The notifier's rules without I/O: phones, encodings and segments, statuses, receipts, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.sms import SmsEncoding, SmsFailureReason
from notifier.domain import (
    WHOLE_MESSAGE,
    FailureKind,
    GiveUp,
    InvalidPhone,
    MessageStatus,
    ReceiptStatus,
    ReplayRefusal,
    Retry,
    RetryPolicy,
    advance,
    advance_receipt,
    encode_segment,
    encoding_of,
    intake,
    is_stop_request,
    merge_receipts,
    normalized_mobile,
    replay,
    replay_key,
    segment_count,
    split_segments,
)
from servicekit.http import retry_after_seconds

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = MessageStatus
R = ReceiptStatus


@pytest.mark.parametrize("phone", ["+79161234567", "+447911123456", "+12015550123"])
def test_mobile_numbers_are_accepted(phone: str) -> None:
    assert normalized_mobile(phone) == phone


@pytest.mark.parametrize(
    ("phone", "why"),
    [("+74951234567", "not a mobile"), ("+7916123", "not a valid"), ("79161234567", "not a phone"), ("+", "not a")],
)
def test_landlines_and_garbage_are_refused(phone: str, why: str) -> None:
    with pytest.raises(InvalidPhone, match=why):
        normalized_mobile(phone)


def test_gsm7_with_its_extension_table_and_ucs2_otherwise() -> None:
    assert encoding_of("Hello @ £5 {ok} [x] ~ € ^ | \\") is SmsEncoding.GSM7
    assert encoding_of("Привет") is SmsEncoding.UCS2
    assert encoding_of("ok 👍") is SmsEncoding.UCS2
    assert encoding_of("naïve") is SmsEncoding.UCS2  # ï is not in GSM 03.38


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("я" * 70, 1),
        ("я" * 71, 2),
        ("я" * 134, 2),
        ("я" * 135, 3),
        ("👍" * 35, 1),  # astral characters are two UCS-2 units
        ("👍" * 36, 2),
    ],
)
def test_segment_counts_follow_160_153_and_70_67(text: str, segments: int) -> None:
    assert segment_count(text) == segments


def test_a_split_never_cuts_an_escape_pair_or_a_surrogate_pair() -> None:
    parts = split_segments("a" * 152 + "€" + "b" * 10)
    assert parts == ["a" * 152, "€" + "b" * 10]  # the € would straddle the 153-septet boundary
    assert "".join(split_segments("x" + "👍" * 40)) == "x" + "👍" * 40
    assert all(len(encode_segment(p, SmsEncoding.UCS2)) <= 134 for p in split_segments("я" * 300))
    assert encode_segment("@A€", SmsEncoding.GSM7) == bytes([0x00, 0x41, 0x1B, 0x65])


def test_status_never_moves_backwards_nor_out_of_a_final_state() -> None:
    assert advance(S.DISPATCHED, S.DELIVERED) is S.DELIVERED
    assert advance(S.DELIVERED, S.DISPATCHED) is S.DELIVERED  # a late "sent" after "delivered"
    assert advance(S.DELIVERED, S.FAILED) is S.DELIVERED
    assert advance(S.FAILED, S.DELIVERED) is S.FAILED
    assert advance(S.SENDING, S.PENDING) is S.SENDING
    assert advance_receipt(R.DELIVERED, R.ACCEPTED) is R.DELIVERED
    assert advance_receipt(None, R.ACCEPTED) is R.ACCEPTED
    assert advance_receipt(R.ACCEPTED, R.UNDELIVERABLE) is R.UNDELIVERABLE


def test_one_receipt_per_segment_merges_into_one_status() -> None:
    assert merge_receipts(3, {0: R.DELIVERED, 1: R.DELIVERED}) is None
    assert merge_receipts(3, {0: R.DELIVERED, 1: R.DELIVERED, 2: R.ACCEPTED}) is None
    assert merge_receipts(3, {0: R.DELIVERED, 1: R.DELIVERED, 2: R.DELIVERED}) is S.DELIVERED
    assert merge_receipts(3, {0: R.DELIVERED, 1: R.UNDELIVERABLE}) is S.FAILED
    assert merge_receipts(2, {WHOLE_MESSAGE: R.DELIVERED}) is S.DELIVERED
    assert merge_receipts(1, {}) is None


def test_intake_decides_before_any_provider_sees_the_message() -> None:
    base = {"phone": "+79161234567", "expires_at": NOW + timedelta(hours=1), "not_before": None, "now": NOW}
    marketing = {**base, "transactional": False, "sms_consent": True}
    assert intake(**marketing, opted_out=False).status is S.PENDING
    refused = intake(**marketing, opted_out=True)
    assert refused.status is S.FAILED and refused.failure is SmsFailureReason.OPTED_OUT
    expired = intake(**{**marketing, "now": NOW + timedelta(hours=2)}, opted_out=False)
    assert expired.status is S.EXPIRED and expired.failure is SmsFailureReason.EXPIRED
    quiet = intake(**{**marketing, "not_before": NOW + timedelta(hours=0.5)}, opted_out=False)
    assert quiet.status is S.SCHEDULED and quiet.due_at == NOW + timedelta(hours=0.5)
    landline = intake(**{**marketing, "phone": "+74951234567"}, opted_out=False)
    assert landline.failure is SmsFailureReason.INVALID_PHONE


def test_marketing_needs_consent_and_an_opt_out_blocks_everything() -> None:
    base = {"phone": "+79161234567", "expires_at": NOW + timedelta(hours=1), "not_before": None, "now": NOW}
    for consent in (False, None):  # refused, or not stated (an older sender): fail safe
        refused = intake(**base, transactional=False, sms_consent=consent, opted_out=False)
        assert refused.status is S.FAILED and refused.failure is SmsFailureReason.NO_CONSENT
    assert "absent" in intake(**base, transactional=False, sms_consent=None, opted_out=False).detail
    # A service message about the order needs no marketing consent...
    for consent in (False, None, True):
        assert intake(**base, transactional=True, sms_consent=consent, opted_out=False).status is S.PENDING
    # ...but a number that opted out receives nothing, whatever the campaign calls its message.
    blocked = intake(**base, transactional=True, sms_consent=True, opted_out=True)
    assert blocked.status is S.FAILED and blocked.failure is SmsFailureReason.OPTED_OUT
    # Both: the opt-out is the reason (it is the customer's own word).
    assert intake(**base, transactional=False, sms_consent=False, opted_out=True).failure is SmsFailureReason.OPTED_OUT


def test_retries_back_off_exponentially_with_jitter_and_honour_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=1, max_s=10)
    assert [policy.delay(n, None, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(3, None, rand=lambda: 0.5) == 2  # full jitter: anywhere in [0, cap]
    assert policy.delay(1, 30, rand=lambda: 1.0) == 30  # Retry-After wins when longer
    expires = NOW + timedelta(hours=1)

    def decide(attempt: int, kind: FailureKind = FailureKind.TRANSIENT, retry_after: float | None = None) -> object:
        return policy.decide(
            attempt=attempt,
            kind=kind,
            detail="x",
            retry_after_s=retry_after,
            now=NOW,
            expires_at=expires,
            rand=lambda: 1.0,
        )

    assert decide(1) == Retry(NOW + timedelta(seconds=1))
    assert isinstance(last := decide(5), GiveUp) and last.reason is SmsFailureReason.PROVIDER_ERROR
    assert isinstance(refused := decide(1, FailureKind.PERMANENT), GiveUp)
    assert refused.reason is SmsFailureReason.PROVIDER_REJECTED
    too_late = decide(1, retry_after=7200)
    assert isinstance(too_late, GiveUp) and too_late.reason is SmsFailureReason.EXPIRED


def test_retry_after_header_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("3", NOW) == 3
    assert retry_after_seconds("Sun, 01 Mar 2026 12:00:05 GMT", NOW) == 5
    assert retry_after_seconds(None, NOW) is None
    assert retry_after_seconds("soon", NOW) is None


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop! ", "СТОП", "стоп", "ОТПИСКА", "отписка."])
def test_stop_words_in_latin_and_cyrillic(text: str) -> None:
    assert is_stop_request(text)


@pytest.mark.parametrize("text", ["please stop by", "STOPPED", "Спасибо", ""])
def test_other_replies_are_not_stop_requests(text: str) -> None:
    assert not is_stop_request(text)


def test_a_replay_starts_a_new_round_only_for_a_message_no_provider_took() -> None:
    base = {"phone": "+79161234567", "expires_at": NOW + timedelta(hours=1), "not_before": None, "now": NOW}
    ok = intake(**base, transactional=False, sms_consent=True, opted_out=False)
    failed, now_opted_out = S.FAILED, intake(**base, transactional=False, sms_consent=True, opted_out=True)
    lapsed = intake(**{**base, "now": NOW + timedelta(hours=2)}, transactional=False, sms_consent=True, opted_out=False)
    assert replay(status=failed, dispatched_before=False, again=ok).start == ok
    refusals = [
        (S.DELIVERED, False, ok, ReplayRefusal.DELIVERED),
        (S.DISPATCHED, False, ok, ReplayRefusal.DISPATCHED),
        (S.FAILED, True, ok, ReplayRefusal.DISPATCHED),  # undeliverable after a provider took it: no second SMS
        (S.EXPIRED, False, ok, ReplayRefusal.EXPIRED),
        (S.FAILED, False, lapsed, ReplayRefusal.EXPIRED),
        (S.PENDING, False, ok, ReplayRefusal.IN_PROGRESS),
        (S.SENDING, False, ok, ReplayRefusal.IN_PROGRESS),
        (S.FAILED, False, now_opted_out, SmsFailureReason.OPTED_OUT),  # the intake's rules hold today
    ]
    for status, dispatched_before, again, reason in refusals:
        decision = replay(status=status, dispatched_before=dispatched_before, again=again)
        assert decision.start is None and decision.refused == reason, (status, reason)
    assert replay_key("abc", 0) == "abc" and replay_key("abc", 2) == "abc.replay-2"
