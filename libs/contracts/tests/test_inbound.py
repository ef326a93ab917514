from __future__ import annotations

import json
from typing import Any

import pytest

from contracts import (
    Contract,
    ContractError,
    Envelope,
    ErrorReason,
    OrderStatusReported,
    OrderUpserted,
    StatusType,
    parse_inbound,
)


def _document(data: Contract) -> dict[str, Any]:
    raw = Envelope.wrap(data, source="/upstream/shop", partner_id="acme", event_id="evt-1").to_bytes()
    document: dict[str, Any] = json.loads(raw)
    return document


def _reason(raw: bytes | str) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_inbound(raw)
    return caught.value


def test_parse_inbound_dispatches_on_type(samples: dict[type, Contract]) -> None:
    upserted = parse_inbound(json.dumps(_document(samples[OrderUpserted])).encode())
    reported = parse_inbound(json.dumps(_document(samples[OrderStatusReported])).encode())

    assert isinstance(upserted.data, OrderUpserted)
    assert dict(upserted.data.statuses.items()) == {
        StatusType.GENERAL: "accepted",
        StatusType.PAYMENT: "invoice-issued",
    }
    assert isinstance(reported.data, OrderStatusReported)
    assert reported.data.code == "shipped"


def test_an_upstream_producer_in_another_language_is_understood() -> None:
    raw = b"""{
      "specversion": "1.0", "id": "shop-7781", "source": "//shop.example/orders", "type": "order.upserted.v1",
      "time": "2025-03-01T15:00:00+03:00", "partnerid": "acme",
      "data": {"order_id": "A-1", "customer": {"id": "c-9"}, "amount": "10.5", "currency": "EUR",
               "placed_at": "2025-03-01T14:00:00+03:00", "occurred_at": "2025-03-01T15:00:00+03:00",
               "statuses": {"delivery": "at-pickup-point"}}
    }"""
    envelope = parse_inbound(raw)

    assert isinstance(envelope.data, OrderUpserted)
    assert envelope.data.statuses.of(StatusType.DELIVERY) == "at-pickup-point"
    assert envelope.data.statuses.of(StatusType.GENERAL) is None
    assert envelope.data.customer.sms_consent is False
    assert envelope.data.placed_at.isoformat() == "2025-03-01T11:00:00+00:00"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"order.upserted.v1"', b"null"],
    ids=["broken", "empty", "not-utf8", "array", "string", "null"],
)
def test_malformed_json(raw: bytes) -> None:
    assert _reason(raw).reason is ErrorReason.MALFORMED_JSON


def test_unknown_event_type(samples: dict[type, Contract]) -> None:
    document = _document(samples[OrderUpserted])
    document["type"] = "order.upserted.v2"

    error = _reason(json.dumps(document))

    assert error.reason is ErrorReason.UNKNOWN_EVENT_TYPE
    assert error.event_type == "order.upserted.v2"
    assert error.event_id == "evt-1"
    assert "order.status-reported.v1" in error.detail


def test_an_event_of_another_topic_is_an_unknown_type(samples: dict[type, Contract]) -> None:
    from contracts import OrderStatusChanged

    raw = Envelope.wrap(samples[OrderStatusChanged], source="/services/orders", partner_id="acme").to_bytes()
    assert _reason(raw).reason is ErrorReason.UNKNOWN_EVENT_TYPE


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("amount", "-5", "data.amount"),
        ("currency", "rub", "data.currency"),
        ("order_id", "", "data.order_id"),
        ("statuses", {"general": "Not A Slug"}, "data.statuses.general"),
        ("placed_at", "2025-03-01T12:00:00", "data.placed_at"),
        ("customer", {"phone": "+7 900"}, "data.customer.id"),
        ("source_sequence", -1, "data.source_sequence"),
    ],
)
def test_invalid_payload(samples: dict[type, Contract], field: str, value: object, where: str) -> None:
    document = _document(samples[OrderUpserted])
    document["data"][field] = value

    error = _reason(json.dumps(document))

    assert error.reason is ErrorReason.INVALID_PAYLOAD
    assert where in error.detail
    assert error.event_type == "order.upserted.v1"
    assert error.event_id == "evt-1"


@pytest.mark.parametrize("data", [None, [], "x"])
def test_data_that_is_not_an_object_is_an_invalid_payload(samples: dict[type, Contract], data: object) -> None:
    document = {**_document(samples[OrderStatusReported]), "data": data}

    assert _reason(json.dumps(document)).reason is ErrorReason.INVALID_PAYLOAD


def test_missing_payload_field(samples: dict[type, Contract]) -> None:
    document = _document(samples[OrderStatusReported])
    del document["data"]["code"]

    error = _reason(json.dumps(document))

    assert error.reason is ErrorReason.INVALID_PAYLOAD
    assert "data.code: Field required" in error.detail


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"partnerid": None}, "partnerid"),
        ({"partnerid": "a:b"}, "partnerid"),
        ({"specversion": "0.3"}, "specversion"),
        ({"source": ""}, "source"),
    ],
)
def test_invalid_envelope(samples: dict[type, Contract], change: dict[str, object], where: str) -> None:
    document = {**_document(samples[OrderStatusReported]), **change}

    error = _reason(json.dumps(document))

    assert error.reason is ErrorReason.INVALID_ENVELOPE
    assert error.detail.startswith(where)


def test_missing_type_is_an_invalid_envelope(samples: dict[type, Contract]) -> None:
    document = _document(samples[OrderStatusReported])
    del document["type"]

    assert _reason(json.dumps(document)).reason is ErrorReason.INVALID_ENVELOPE


def test_the_error_message_carries_the_reason() -> None:
    error = _reason(b"{")
    assert str(error).startswith("malformed_json: ")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("escape", "problem"),
    [("\\u0000", "NUL character"), ("\\ud800", "unpaired UTF-16 surrogate"), ("\\uDC00", "unpaired UTF-16 surrogate")],
)
def test_unstorable_text_is_an_invalid_payload_naming_the_field(
    samples: dict[type, Contract], escape: str, problem: str
) -> None:
    document = _document(samples[OrderUpserted])
    raw = json.dumps(document).replace('"order_id": "', f'"order_id": "{escape}', 1).encode()
    assert escape.encode() in raw

    error = _reason(raw)

    assert error.reason is ErrorReason.INVALID_PAYLOAD
    assert error.detail.startswith("data.order_id: ") and problem in error.detail
    in_a_key = json.dumps(document).replace('"customer": {', f'"customer": {{"x{escape}": 1, ', 1).encode()
    assert "data.customer.x" in _reason(in_a_key).detail


def test_escaped_surrogate_pairs_are_characters_and_pass(samples: dict[type, Contract]) -> None:
    document = _document(samples[OrderUpserted])
    document["data"]["customer"]["name"] = "\U0001f60d"  # json.dumps writes it as \ud83d\ude0d

    envelope = parse_inbound(json.dumps(document).encode())

    assert isinstance(envelope.data, OrderUpserted) and envelope.data.customer.name == "\U0001f60d"
