"""The catalogue of every contract: event type -> model, topic -> the types it carries, schema versions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from contracts.base import Contract
from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import Envelope, decode_any, envelope_type
from contracts.identity import ApiClientRevoked
from contracts.inbound import OrderStatusReported, OrderUpserted
from contracts.orders import OrderStatusChanged
from contracts.sms import SendSms, SmsDelivered, SmsDispatched, SmsFailed
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.topics import Topic


@dataclass(frozen=True)
class ContractSpec:
    """A data model and its envelope-wrapped form (the shape of the record value)."""

    model: type[Contract]
    envelope: type[Envelope[Any]]

    @property
    def event_type(self) -> str:
        return self.model.EVENT_TYPE

    @property
    def topic(self) -> Topic:
        return self.model.TOPIC

    @property
    def schema_version(self) -> int:
        return self.model.SCHEMA_VERSION

    @property
    def schema_file(self) -> str:
        return f"{self.event_type}.json"


def _spec(model: type[Contract]) -> ContractSpec:
    return ContractSpec(model=model, envelope=envelope_type(model))


ALL_CONTRACTS: tuple[ContractSpec, ...] = tuple(
    _spec(model)
    for model in (
        StatusDefinitionUpserted,
        StatusDefinitionArchived,
        OrderUpserted,
        OrderStatusReported,
        OrderStatusChanged,
        SendSms,
        SmsDispatched,
        SmsFailed,
        SmsDelivered,
        CampaignStatusUsage,
        ApiClientRevoked,
    )
)

EVENT_TYPES: dict[str, type[Contract]] = {spec.event_type: spec.model for spec in ALL_CONTRACTS}

SCHEMA_VERSIONS: dict[str, int] = {spec.event_type: spec.schema_version for spec in ALL_CONTRACTS}

TOPIC_CONTRACTS: dict[Topic, tuple[type[Contract], ...]] = {
    topic: tuple(spec.model for spec in ALL_CONTRACTS if spec.topic == topic)
    for topic in dict.fromkeys(spec.topic for spec in ALL_CONTRACTS)
}
"""The contracts each topic carries (a consumer of a topic decodes with `parse_event(raw, topic=...)`)."""


def parse_event(
    raw: bytes | str, *, topic: Topic | None = None, accept: Iterable[type[Contract]] | None = None
) -> Envelope[Contract]:
    """Parse any known contract, or only those of `topic`, or only `accept`; raises `ContractError`."""
    if accept is None:
        accept = TOPIC_CONTRACTS.get(topic, ()) if topic is not None else EVENT_TYPES.values()
    return decode_any(raw, accept)
