from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    ALL_CONTRACTS,
    Contract,
    ContractError,
    ContractSpec,
    Envelope,
    ErrorReason,
    OrderStatusReported,
    OrderUpserted,
    SendSms,
    decode,
    envelope_type,
    order_key,
)

SPEC_IDS = [spec.event_type for spec in ALL_CONTRACTS]


def _wrap(data: Contract, **kwargs: Any) -> Envelope[Any]:
    partner = data.owner_partner_id() or "acme"
    return Envelope.wrap(data, source="/services/test", partner_id=partner, **kwargs)


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=SPEC_IDS)
def test_every_contract_round_trips_through_bytes(spec: ContractSpec, samples: dict[type, Contract]) -> None:
    envelope = _wrap(samples[spec.model], correlation_id="corr-1", causation_id="cause-1")
    raw = envelope.to_bytes()

    assert spec.envelope.from_bytes(raw) == envelope
    assert decode(raw, spec.model) == envelope
    assert raw == spec.envelope.from_bytes(raw).to_bytes()
    assert b" " not in raw.split(b'"data"')[0], "compact JSON"
    document = json.loads(raw)
    assert document["type"] == spec.event_type
    assert document["specversion"] == "1.0"
    assert document["datacontenttype"] == "application/json"
    assert envelope.topic == spec.topic


def test_wrap_fills_the_attributes(samples: dict[type, Contract]) -> None:
    data = samples[OrderUpserted]
    envelope = Envelope.wrap(data, source="/upstream/shop", partner_id="acme")

    assert type(envelope) is envelope_type(OrderUpserted)
    assert envelope.type == "order.upserted.v1"
    assert envelope.subject == "order-42"
    assert envelope.partnerid == "acme"
    assert envelope.time.tzinfo == UTC
    assert len(envelope.id) == 36
    assert envelope.key() == order_key("acme", "order-42")
    assert envelope.data is data


def test_wrap_honours_explicit_attributes(samples: dict[type, Contract]) -> None:
    moscow = timezone(timedelta(hours=3))
    envelope = Envelope.wrap(
        samples[OrderStatusReported],
        source="/upstream/shop",
        partner_id="acme",
        subject="custom",
        event_id="evt-1",
        correlation_id="corr",
        causation_id="cause",
        time=datetime(2025, 3, 1, 15, 0, tzinfo=moscow),
    )
    assert (envelope.id, envelope.subject, envelope.correlationid, envelope.causationid) == (
        "evt-1",
        "custom",
        "corr",
        "cause",
    )
    assert envelope.time == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert envelope.time.utcoffset() == timedelta(0)


def test_wrap_caused_by_chains_causation_and_correlation(samples: dict[type, Contract]) -> None:
    upstream = Envelope.wrap(samples[OrderStatusReported], source="/upstream/shop", partner_id="acme")
    reaction = Envelope.wrap_caused_by(upstream, samples[OrderStatusReported], source="/services/orders")
    second = Envelope.wrap_caused_by(reaction, samples[OrderStatusReported], source="/services/campaigns")

    assert reaction.causationid == upstream.id
    assert reaction.correlationid == upstream.id
    assert second.causationid == reaction.id
    assert second.correlationid == upstream.id
    assert second.partnerid == "acme"


def test_type_must_match_the_data_contract(samples: dict[type, Contract]) -> None:
    with pytest.raises(ValidationError, match="does not match the data contract"):
        Envelope[OrderUpserted](
            id="evt-1",
            source="/x",
            type="order.status-reported.v1",
            time=datetime.now(UTC),
            partnerid="acme",
            data=samples[OrderUpserted],
        )


def test_partner_of_the_payload_must_match_the_envelope(samples: dict[type, Contract]) -> None:
    with pytest.raises(ValidationError, match="differs from the payload's partner"):
        Envelope.wrap(samples[SendSms], source="/services/campaigns", partner_id="other")


def test_unknown_attributes_and_fields_are_ignored(samples: dict[type, Contract]) -> None:
    document = json.loads(_wrap(samples[OrderUpserted]).to_bytes())
    document["traceparent"] = "00-abc-def-01"
    document["data"]["loyalty_tier"] = "gold"
    document["data"]["customer"]["email"] = "a@example.com"

    envelope = decode(json.dumps(document).encode(), OrderUpserted)

    assert envelope.data == samples[OrderUpserted]


def test_reading_is_strict_about_what_is_there(samples: dict[type, Contract]) -> None:
    document = json.loads(_wrap(samples[OrderStatusReported]).to_bytes())
    document["data"]["source_sequence"] = "8"

    with pytest.raises(ContractError) as caught:
        decode(json.dumps(document), OrderStatusReported)
    assert caught.value.reason is ErrorReason.INVALID_PAYLOAD
    assert "data.source_sequence" in caught.value.detail


@pytest.mark.parametrize("attribute", ["id", "time", "source", "partnerid"])
def test_required_attributes(samples: dict[type, Contract], attribute: str) -> None:
    """A missing id must not be replaced by a fresh one: redeliveries would then look like new events."""
    document = json.loads(_wrap(samples[OrderStatusReported]).to_bytes())
    del document[attribute]

    with pytest.raises(ContractError) as caught:
        decode(json.dumps(document), OrderStatusReported)
    assert caught.value.reason is ErrorReason.INVALID_ENVELOPE
    assert caught.value.detail == f"{attribute}: Field required"


def test_optional_attributes_may_be_absent(samples: dict[type, Contract]) -> None:
    document = json.loads(_wrap(samples[OrderStatusReported]).to_bytes())
    for attribute in ("specversion", "datacontenttype", "subject", "correlationid", "causationid"):
        del document[attribute]

    envelope = decode(json.dumps(document), OrderStatusReported)

    assert (envelope.specversion, envelope.subject, envelope.causationid) == ("1.0", None, None)


def test_a_naive_time_is_an_invalid_envelope(samples: dict[type, Contract]) -> None:
    document = json.loads(_wrap(samples[OrderStatusReported]).to_bytes())
    document["time"] = "2025-03-01T12:00:00"

    with pytest.raises(ContractError) as caught:
        decode(json.dumps(document), OrderStatusReported)
    assert caught.value.reason is ErrorReason.INVALID_ENVELOPE
    assert caught.value.detail.startswith("time:")


def test_money_is_a_plain_decimal_string_on_the_wire(samples: dict[type, Contract]) -> None:
    data = OrderUpserted.model_validate({**samples[OrderUpserted].model_dump(), "amount": "1E+3"})
    document = json.loads(_wrap(data).to_bytes())
    assert document["data"]["amount"] == "1000"

    for bad in (1000, 10.5, "1E+3", "-1", "1,5", ""):
        document["data"]["amount"] = bad
        with pytest.raises(ContractError) as caught:
            decode(json.dumps(document), OrderUpserted)
        assert caught.value.reason is ErrorReason.INVALID_PAYLOAD, bad
        assert "data.amount" in caught.value.detail


def test_from_bytes_needs_a_parametrised_envelope() -> None:
    with pytest.raises(TypeError, match="parametrise"):
        Envelope.from_bytes(b"{}")


def test_decode_rejects_another_event_type(samples: dict[type, Contract]) -> None:
    raw = _wrap(samples[OrderStatusReported]).to_bytes()

    with pytest.raises(ContractError) as caught:
        Envelope[OrderUpserted].from_bytes(raw)
    assert caught.value.reason is ErrorReason.UNKNOWN_EVENT_TYPE
    assert caught.value.event_type == "order.status-reported.v1"
