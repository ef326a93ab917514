"""Upstream commands on `orders.inbound.v1` (shops, ERPs, delivery services) and their parser.

The partner is the envelope's `partnerid`; `source_sequence`, when the upstream system has one, orders the
events of one order more reliably than `occurred_at` (stale events change nothing).
"""

from __future__ import annotations

from typing import Annotated, cast

from pydantic import Field, StringConstraints

from contracts.base import Contract
from contracts.envelope import Envelope, decode_any
from contracts.orders import Customer
from contracts.primitives import CurrencyCode, Identifier, Money, Slug, UtcDatetime
from contracts.statuses import StatusCodes
from contracts.topics import Topic, order_key


class _InboundOrderCommand(Contract):
    TOPIC = Topic.ORDERS_INBOUND

    order_id: Identifier

    def record_key(self, partner_id: str) -> bytes:
        return order_key(partner_id, self.order_id)

    def event_subject(self) -> str | None:
        return self.order_id


class OrderUpserted(_InboundOrderCommand):
    """The upstream system's full view of an order; `statuses` sets the types it names (codes)."""

    EVENT_TYPE = "order.upserted.v1"

    customer: Customer
    amount: Money
    currency: CurrencyCode
    placed_at: UtcDatetime
    statuses: StatusCodes = Field(default_factory=StatusCodes)
    source_sequence: int | None = Field(default=None, ge=0)
    occurred_at: UtcDatetime


class OrderStatusReported(_InboundOrderCommand):
    """One status of an order changed upstream; the code determines the type (codes are unique per partner)."""

    EVENT_TYPE = "order.status-reported.v1"

    code: Slug
    occurred_at: UtcDatetime
    source_sequence: int | None = Field(default=None, ge=0)
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None


INBOUND_CONTRACTS: tuple[type[Contract], ...] = (OrderUpserted, OrderStatusReported)

InboundEnvelope = Envelope[OrderUpserted] | Envelope[OrderStatusReported]


def parse_inbound(raw: bytes | str) -> Envelope[OrderUpserted] | Envelope[OrderStatusReported]:
    """Parse a record of `orders.inbound.v1`; raises `ContractError` (reason: malformed_json,
    invalid_envelope, unknown_event_type or invalid_payload) for the dead-letter topic."""
    return cast(InboundEnvelope, decode_any(raw, INBOUND_CONTRACTS))
