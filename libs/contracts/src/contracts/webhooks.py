"""What the webhooks service sends to partners' endpoints: the body of each delivery (version 1).

A delivery follows the Standard Webhooks specification (headers `webhook-id`, `webhook-timestamp`,
`webhook-signature`); its body is one `WebhookPayload`::

    {"type": "order.status_changed", "version": 1, "event_id": "...", "timestamp": "...", "partner_id": "acme",
     "data": {...}}

* `type` is one of `WebhookEventType`; an endpoint subscribes to some of them.
* `version` is the shape's major version: a field may be added within a version (receivers ignore what they do not
  know, as every reader of this platform does); anything else is a new version.
* `event_id` is the id of the platform event the delivery reports (the same across retries and resends, like the
  `webhook-id` header, which names the delivery); `timestamp` is when that event happened.
* `data` is the platform event itself, as the topic it came from carries it: for `order.status_changed` the
  `OrderStatusChanged` contract (with the order's `sequence`: 1, 2, 3... per order, no gaps, which a receiver
  can use to spot a change it has not seen), for the SMS events their contracts, for `status_definition.changed`
  the status's full definition (`archived` says whether it was archived).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from contracts.base import Contract, ContractModel
from contracts.envelope import Envelope
from contracts.orders import OrderStatusChanged
from contracts.primitives import Identifier, PartnerId, UtcDatetime
from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import StatusDefinition, StatusType

PAYLOAD_VERSION: Literal[1] = 1


class WebhookEventType(StrEnum):
    """What an endpoint can subscribe to."""

    ORDER_STATUS_CHANGED = "order.status_changed"
    SMS_DISPATCHED = "sms.dispatched"
    SMS_DELIVERED = "sms.delivered"
    SMS_FAILED = "sms.failed"
    STATUS_DEFINITION_CHANGED = "status_definition.changed"


class StatusDefinitionChange(ContractModel):
    definition: StatusDefinition = Field(description="The status's full definition after the change.")


WebhookData = OrderStatusChanged | SmsDispatched | SmsDelivered | SmsFailed | StatusDefinitionChange


class WebhookPayload(ContractModel):
    """The body of one webhook delivery."""

    type: WebhookEventType
    version: Literal[1] = PAYLOAD_VERSION
    event_id: Identifier = Field(description="The platform event's id: the same on every retry and resend.")
    timestamp: UtcDatetime = Field(description="When the platform event happened.")
    partner_id: PartnerId
    data: WebhookData

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


_TYPES: dict[type[Contract], WebhookEventType] = {
    OrderStatusChanged: WebhookEventType.ORDER_STATUS_CHANGED,
    SmsDispatched: WebhookEventType.SMS_DISPATCHED,
    SmsDelivered: WebhookEventType.SMS_DELIVERED,
    SmsFailed: WebhookEventType.SMS_FAILED,
    StatusDefinitionUpserted: WebhookEventType.STATUS_DEFINITION_CHANGED,
    StatusDefinitionArchived: WebhookEventType.STATUS_DEFINITION_CHANGED,
}

WEBHOOK_SOURCES: tuple[type[Contract], ...] = tuple(_TYPES)
"""The platform events that become webhooks."""


def webhook_payload(envelope: Envelope[Contract]) -> WebhookPayload:
    """The delivery body that reports `envelope` (one of `WEBHOOK_SOURCES`)."""
    event = envelope.data
    data: WebhookData
    if isinstance(event, StatusDefinitionUpserted | StatusDefinitionArchived):
        data = StatusDefinitionChange(definition=event.definition)
    elif isinstance(event, OrderStatusChanged | SmsDispatched | SmsDelivered | SmsFailed):
        data = event
    else:
        raise ValueError(f"{envelope.type} is no webhook event")
    return WebhookPayload(
        type=_TYPES[type(event)],
        event_id=envelope.id,
        timestamp=envelope.time,
        partner_id=envelope.partnerid,
        data=data,
    )


def status_type_of(payload: WebhookPayload) -> StatusType | None:
    """The status type an event is about (an endpoint may ask for one type only); None for the SMS events."""
    data = payload.data
    if isinstance(data, OrderStatusChanged):
        return data.status_type
    if isinstance(data, StatusDefinitionChange):
        return data.definition.type
    return None


def order_position(payload: WebhookPayload) -> tuple[str, int] | None:
    """The order and its status sequence number, for the events whose deliveries keep an order's order."""
    data = payload.data
    if isinstance(data, OrderStatusChanged):
        return data.order_id, data.sequence
    return None
