"""Topic names, their layout, and the record keys every producer must use.

The one place a topic name is spelled. Partition counts and cleanup policies live beside the
names so the infrastructure creates topics explicitly instead of relying on auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Topic(StrEnum):
    STATUS_DEFINITIONS = "registry.status-definitions.v1"
    ORDERS_INBOUND = "orders.inbound.v1"
    ORDERS_INBOUND_RETRY = "orders.inbound.v1.retry"
    ORDERS_INBOUND_DLQ = "orders.inbound.v1.dlq"
    ORDER_STATUS_CHANGED = "orders.status-changed.v1"
    ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ = "orders.status-changed.v1.campaigns.dlq"
    SEND_SMS = "notifier.send-sms.v1"
    SEND_SMS_DLQ = "notifier.send-sms.v1.dlq"
    SMS_EVENTS = "notifier.sms-events.v1"
    SMS_EVENTS_CAMPAIGNS_DLQ = "notifier.sms-events.v1.campaigns.dlq"
    CAMPAIGN_STATUS_USAGE = "campaigns.status-usage.v1"
    CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ = "campaigns.status-usage.v1.registry.dlq"
    CLIENT_REVOCATIONS = "identity.client-revocations.v1"
    ORDER_STATUS_CHANGED_WEBHOOKS_DLQ = "orders.status-changed.v1.webhooks.dlq"
    SMS_EVENTS_WEBHOOKS_DLQ = "notifier.sms-events.v1.webhooks.dlq"
    STATUS_DEFINITIONS_WEBHOOKS_DLQ = "registry.status-definitions.v1.webhooks.dlq"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}

TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.STATUS_DEFINITIONS, partitions=3, config=COMPACTED),
    TopicSpec(Topic.ORDERS_INBOUND, partitions=6),
    TopicSpec(Topic.ORDERS_INBOUND_RETRY, partitions=3),
    TopicSpec(Topic.ORDERS_INBOUND_DLQ, partitions=1),
    TopicSpec(Topic.ORDER_STATUS_CHANGED, partitions=6),
    TopicSpec(Topic.ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ, partitions=1),
    TopicSpec(Topic.SEND_SMS, partitions=6),
    TopicSpec(Topic.SEND_SMS_DLQ, partitions=1),
    TopicSpec(Topic.SMS_EVENTS, partitions=3),
    TopicSpec(Topic.SMS_EVENTS_CAMPAIGNS_DLQ, partitions=1),
    TopicSpec(Topic.CAMPAIGN_STATUS_USAGE, partitions=3, config=COMPACTED),
    TopicSpec(Topic.CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ, partitions=1),
    TopicSpec(Topic.CLIENT_REVOCATIONS, partitions=3, config=COMPACTED),
    TopicSpec(Topic.ORDER_STATUS_CHANGED_WEBHOOKS_DLQ, partitions=1),
    TopicSpec(Topic.SMS_EVENTS_WEBHOOKS_DLQ, partitions=1),
    TopicSpec(Topic.STATUS_DEFINITIONS_WEBHOOKS_DLQ, partitions=1),
)


def prefixed(topic: Topic | str, prefix: str = "") -> str:
    """The physical topic name: an optional namespace prefix (per environment or per test) + the name."""
    return f"{prefix}{topic}" if prefix else str(topic)


def order_key(partner_id: str, order_id: str) -> bytes:
    """Key on order topics: per-order ordering within a partner."""
    return f"{partner_id}:{order_id}".encode()


def status_definition_key(partner_id: str, code: str) -> bytes:
    """Key on the compacted status-definitions topic: the latest definition per partner and code survives."""
    return f"{partner_id}:{code}".encode()


def sms_key(partner_id: str, phone: str) -> bytes:
    """Key on SMS topics: per-recipient ordering."""
    return f"{partner_id}:{phone}".encode()


def campaign_key(partner_id: str, campaign_id: str) -> bytes:
    """Key on the compacted campaign topic: the latest usage per campaign survives."""
    return f"{partner_id}:{campaign_id}".encode()


def client_revocation_key(partner_id: str, client_id: str) -> bytes:
    """Key on the compacted client-revocations topic: one record per revoked API client survives."""
    return f"{partner_id}:{client_id}".encode()
