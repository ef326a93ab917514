from __future__ import annotations

import re
from typing import Any

import pytest

from contracts import (
    ALL_CONTRACTS,
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    TOPIC_CONTRACTS,
    Contract,
    ContractError,
    ContractSpec,
    Envelope,
    ErrorReason,
    SmsDelivered,
    SmsDispatched,
    SmsFailed,
    Topic,
    parse_event,
)

SPEC_IDS = [spec.event_type for spec in ALL_CONTRACTS]


def test_event_types_are_unique_and_complete() -> None:
    assert len(EVENT_TYPES) == len(ALL_CONTRACTS) == 11
    assert set(SCHEMA_VERSIONS) == set(EVENT_TYPES)


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=SPEC_IDS)
def test_event_type_names_its_schema_version(spec: ContractSpec) -> None:
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*(\.[a-z]+(-[a-z]+)*)+\.v\d+", spec.event_type)
    assert spec.event_type.endswith(f".v{spec.schema_version}")
    assert spec.envelope is Envelope[spec.model]  # type: ignore[name-defined]
    assert EVENT_TYPES[spec.event_type] is spec.model


def test_topics_carry_their_contracts() -> None:
    assert TOPIC_CONTRACTS[Topic.SMS_EVENTS] == (SmsDispatched, SmsFailed, SmsDelivered)
    assert sum(len(models) for models in TOPIC_CONTRACTS.values()) == len(ALL_CONTRACTS)


def test_parse_event_by_topic(samples: dict[type, Contract]) -> None:
    raw = Envelope.wrap(samples[SmsFailed], source="/services/notifier", partner_id="acme").to_bytes()

    envelope: Envelope[Any] = parse_event(raw, topic=Topic.SMS_EVENTS)
    assert isinstance(envelope.data, SmsFailed)
    assert parse_event(raw).data == samples[SmsFailed]

    with pytest.raises(ContractError) as caught:
        parse_event(raw, topic=Topic.ORDER_STATUS_CHANGED)
    assert caught.value.reason is ErrorReason.UNKNOWN_EVENT_TYPE
