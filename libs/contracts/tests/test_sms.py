from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from contracts import SEND_SMS_NAMESPACE, Contract, SendSms, SmsEncoding, SmsFailed, SmsFailureReason, send_sms_id


def test_send_sms_id_is_deterministic() -> None:
    first = send_sms_id("campaign-1", "event-1")

    assert first == send_sms_id("campaign-1", "event-1")
    assert uuid.UUID(first).version == 5
    assert first == str(uuid.uuid5(SEND_SMS_NAMESPACE, "campaign-1\nevent-1"))


def test_send_sms_id_is_pinned() -> None:
    """Changing the namespace or the derivation would break de-duplication across a deploy."""
    assert str(SEND_SMS_NAMESPACE) == "b52053fb-a0fb-46c3-bf29-f3fbc30a3735"
    assert send_sms_id("campaign-1", "event-1") == "51e2eda9-57f9-5087-b32a-8046f0285d08"


@pytest.mark.parametrize(
    ("campaign", "event"),
    [("campaign-2", "event-1"), ("campaign-1", "event-2"), ("campaign-1\nevent", "1"), ("event-1", "campaign-1")],
)
def test_send_sms_id_differs_per_campaign_and_event(campaign: str, event: str) -> None:
    assert send_sms_id(campaign, event) != send_sms_id("campaign-1", "event-1")


@pytest.mark.parametrize("phone", ["+79001234567", "+14155550100", "+4420794600"])
def test_e164_phones_are_accepted(samples: dict[type, Contract], phone: str) -> None:
    SendSms.model_validate({**samples[SendSms].model_dump(), "phone": phone})


@pytest.mark.parametrize("phone", ["79001234567", "+7 900 123-45-67", "+0123456789", "+1234", "+1234567890123456"])
def test_non_e164_phones_are_rejected(samples: dict[type, Contract], phone: str) -> None:
    with pytest.raises(ValidationError, match="phone"):
        SendSms.model_validate({**samples[SendSms].model_dump(), "phone": phone})


@pytest.mark.parametrize("text", ["", "x" * 1601])
def test_text_length_is_bounded(samples: dict[type, Contract], text: str) -> None:
    with pytest.raises(ValidationError, match="text"):
        SendSms.model_validate({**samples[SendSms].model_dump(), "text": text})


def test_expiry_must_follow_the_request(samples: dict[type, Contract]) -> None:
    sms = samples[SendSms]
    assert isinstance(sms, SendSms)
    with pytest.raises(ValidationError, match="expires_at must be after requested_at"):
        SendSms.model_validate({**sms.model_dump(), "expires_at": sms.requested_at})
    with pytest.raises(ValidationError, match="not_before must be before expires_at"):
        SendSms.model_validate({**sms.model_dump(), "not_before": sms.expires_at + timedelta(minutes=1)})


def test_send_sms_defaults(samples: dict[type, Contract]) -> None:
    minimal = {k: v for k, v in samples[SendSms].model_dump().items() if k not in {"sender", "not_before"}}
    del minimal["transactional"]
    minimal.pop("sms_consent", None)
    sms = SendSms.model_validate(minimal)
    assert (sms.sender, sms.not_before, sms.transactional, sms.sms_consent) == (None, None, False, None)


def test_failure_reason_is_an_open_code(samples: dict[type, Contract]) -> None:
    failed = SmsFailed.model_validate({**samples[SmsFailed].model_dump(), "reason": "carrier_blocked"})
    assert failed.reason == "carrier_blocked"
    assert SmsFailureReason.OPTED_OUT.value == "opted_out"
    assert {encoding.value for encoding in SmsEncoding} == {"gsm7", "ucs2"}
