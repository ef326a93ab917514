"""An upstream system (a shop, an ERP) publishing orders and status reports to `orders.inbound.v1`, as the
end-to-end and browser tests play the product's example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported, OrderUpserted
from contracts.orders import Customer
from contracts.statuses import StatusCodes
from contracts.topics import Topic, prefixed
from devtools.platform import Platform

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
PHONES = {"o-1": "+79161110001", "o-2": "+79161110002", "o-3": "+79161110003", "o-4": "+79161110004"}


class Upstream:
    def __init__(self, producer: AIOKafkaProducer, platform: Platform, partner: str) -> None:
        self.producer, self.partner = producer, partner
        self.topic = prefixed(Topic.ORDERS_INBOUND, platform.prefix)

    async def send(self, data: Any, event_id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/shop", partner_id=self.partner, event_id=event_id)
        await self.producer.send_and_wait(self.topic, envelope.to_bytes(), key=envelope.key())
        return envelope

    async def order(
        self, order_id: str, name: str, payment: str, seq: int = 1, phone: str | None = None
    ) -> Envelope[Any]:
        customer = Customer(id=f"c-{order_id}", phone=phone or PHONES[order_id], name=name, sms_consent=True)
        statuses = StatusCodes(general="accepted", delivery="at_pickup_point", payment=payment)
        data = OrderUpserted(
            order_id=order_id, customer=customer, amount="1500.00", currency="RUB", placed_at=T0,
            statuses=statuses, source_sequence=seq, occurred_at=T0 + timedelta(minutes=seq),
        )  # fmt: skip
        return await self.send(data)

    async def report(self, order_id: str, code: str, seq: int) -> Envelope[Any]:
        data = OrderStatusReported(
            order_id=order_id, code=code, occurred_at=T0 + timedelta(minutes=seq), source_sequence=seq
        )
        return await self.send(data)
