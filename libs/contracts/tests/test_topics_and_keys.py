from __future__ import annotations

from typing import Any

import pytest

from contracts import (
    ALL_CONTRACTS,
    TOPIC_SPECS,
    Contract,
    Envelope,
    OrderStatusChanged,
    OrderStatusReported,
    OrderUpserted,
    SendSms,
    SmsDelivered,
    SmsDispatched,
    SmsFailed,
    StatusDefinitionArchived,
    StatusDefinitionUpserted,
    Topic,
    order_key,
    prefixed,
    sms_key,
    status_definition_key,
)


def test_key_builders() -> None:
    assert order_key("acme", "order-42") == b"acme:order-42"
    assert status_definition_key("acme", "shipped") == b"acme:shipped"
    assert sms_key("acme", "+79001234567") == b"acme:+79001234567"


def test_prefixed_topic_names() -> None:
    assert prefixed(Topic.ORDERS_INBOUND) == "orders.inbound.v1"
    assert prefixed(Topic.ORDERS_INBOUND, "test-1.") == "test-1.orders.inbound.v1"


@pytest.mark.parametrize(
    ("model", "key"),
    [
        (StatusDefinitionUpserted, b"acme:shipped"),
        (StatusDefinitionArchived, b"acme:shipped"),
        (OrderUpserted, b"acme:order-42"),
        (OrderStatusReported, b"acme:order-42"),
        (OrderStatusChanged, b"acme:order-42"),
        (SendSms, b"acme:+79001234567"),
        (SmsDispatched, b"acme:+79001234567"),
        (SmsFailed, b"acme:+79001234567"),
        (SmsDelivered, b"acme:+79001234567"),
    ],
)
def test_every_contract_knows_its_record_key(samples: dict[type, Contract], model: type[Contract], key: bytes) -> None:
    envelope: Envelope[Any] = Envelope.wrap(samples[model], source="/services/test", partner_id="acme")
    assert envelope.key() == key


def test_every_contract_topic_is_declared_with_a_spec() -> None:
    declared = {spec.topic for spec in TOPIC_SPECS}
    assert {spec.topic for spec in ALL_CONTRACTS} <= declared
    assert len(declared) == len(TOPIC_SPECS)


def test_the_status_definitions_topic_is_compacted() -> None:
    (spec,) = [spec for spec in TOPIC_SPECS if spec.topic is Topic.STATUS_DEFINITIONS]
    assert spec.config["cleanup.policy"] == "compact"
