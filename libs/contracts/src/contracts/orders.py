"""The orders service's outgoing event and the order parts events share (customer, snapshot)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from contracts.base import Contract, ContractModel
from contracts.primitives import CurrencyCode, Identifier, Money, UtcDatetime
from contracts.statuses import CurrentStatuses, StatusRef, StatusType
from contracts.topics import Topic, order_key

RawPhone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ().-]{5,32}$")]
"""A phone number as the upstream system knows it (``+7 900 123-45-67``, ``8 (900) 1234567``...): not yet
normalised; whoever sends an SMS turns it into E.164 (with the partner's default region)."""


class Customer(ContractModel):
    id: Identifier
    phone: RawPhone | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    sms_consent: bool = Field(default=False, description="The customer agreed to marketing SMS.")


class OrderSnapshot(ContractModel):
    """The order right after the change: all three current statuses, amount, customer."""

    order_id: Identifier
    statuses: CurrentStatuses
    amount: Money
    currency: CurrencyCode
    customer: Customer
    placed_at: UtcDatetime


class OrderStatusChanged(Contract):
    """One status type of an order changed (an upstream event changing two types yields two events).

    `sequence` counts this order's status changes (1, 2, 3... without gaps, across types), so a consumer can
    tell a redelivery (sequence already seen) from a gap. The causing upstream event id is the envelope's
    `causationid`.
    """

    EVENT_TYPE = "order.status-changed.v1"
    TOPIC = Topic.ORDER_STATUS_CHANGED

    order_id: Identifier
    status_type: StatusType
    from_status: StatusRef | None = Field(description="null: the order had no status of this type.")
    to_status: StatusRef
    to_include_in_analytics: bool
    sequence: int = Field(ge=1)
    order: OrderSnapshot
    occurred_at: UtcDatetime = Field(description="When the change happened upstream.")

    @model_validator(mode="after")
    def _check_snapshot(self) -> Self:
        if self.order.order_id != self.order_id:
            raise ValueError(f"order.order_id {self.order.order_id!r} differs from order_id {self.order_id!r}")
        current = self.order.statuses.of(self.status_type)
        if current is None or current.code != self.to_status.code:
            raise ValueError(f"order.statuses.{self.status_type} must be the to_status {self.to_status.code!r}")
        return self

    def record_key(self, partner_id: str) -> bytes:
        return order_key(partner_id, self.order_id)

    def event_subject(self) -> str | None:
        return self.order_id
