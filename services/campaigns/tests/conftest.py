from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from campaigns.app import create_app
from campaigns.settings import CampaignsSettings
from contracts.envelope import Envelope, decode
from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.sms import SendSms
from contracts.status_events import StatusDefinitionUpserted
from contracts.statuses import CurrentStatuses, StatusDefinition, StatusRef, StatusType
from contracts.topics import Topic
from devtools.pytest_plugin import (
    ClientFactory,
    Infrastructure,
    committed_offsets,
    partner_clients,
    read_topic,
    wait_until,
)
from devtools.scenario import DEMO_PARTNER, example_status_list
from servicekit.outbox import idempotent_producer

NAMES = {s["code"]: s["name"] for s in example_status_list()}
TYPES = {s["code"]: StatusType(s["type"]) for s in example_status_list()}


class Clock:
    """A clock the test sets; the service asks it for "now" on every decision."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # 12:00 in Moscow: inside the default quiet hours


@pytest.fixture
def campaigns_settings(infrastructure: Infrastructure, database: str, topic_prefix: str) -> CampaignsSettings:
    return CampaignsSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
        consumer_group=f"{topic_prefix}campaigns",
        sms_events_consumer_group=f"{topic_prefix}campaigns.sms-events",
    )


@pytest.fixture
async def producer(infrastructure: Infrastructure) -> AsyncIterator[AIOKafkaProducer]:
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "campaigns-tests")
    await producer.start()
    yield producer
    await producer.stop()


async def _publish_statuses(producer: AIOKafkaProducer, settings: CampaignsSettings, partner: str) -> None:
    now = datetime.now(UTC)
    for fields in example_status_list():
        definition = StatusDefinition(partner_id=partner, version=1, created_at=now, updated_at=now, **fields)
        envelope = Envelope.wrap(StatusDefinitionUpserted(definition=definition), source="/tests", partner_id=partner)
        await producer.send_and_wait(settings.topic(Topic.STATUS_DEFINITIONS), envelope.to_bytes(), key=envelope.key())


@pytest.fixture
async def campaigns_app(
    campaigns_settings: CampaignsSettings, producer: AIOKafkaProducer, clock: Clock
) -> AsyncIterator[FastAPI]:
    """The service, started after the example statuses of partners demo and acme are on the registry topic."""
    for partner in (DEMO_PARTNER, "acme"):
        await _publish_statuses(producer, campaigns_settings, partner)
    app = create_app(campaigns_settings, clock)
    async with app.router.lifespan_context(app):
        yield app


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(campaigns_app: FastAPI, campaigns_settings: CampaignsSettings) -> AsyncIterator[ClientFactory]:
    """`client_for("acme")`: an HTTP client holding a token of partner acme (scopes as given)."""
    async with partner_clients(campaigns_app, campaigns_settings) as make:
        yield make


@pytest.fixture
def demo(client_for: Client) -> httpx.AsyncClient:
    return client_for(DEMO_PARTNER)


SEED_CAMPAIGN: dict[str, Any] = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name | default: 'Здравствуйте' }}, заказ {{ order.id }} {{ to_status.name }}",
    "sender": "DemoShop",
}


@pytest.fixture
def seed_campaign() -> dict[str, Any]:
    return dict(SEED_CAMPAIGN)


Activate = Callable[..., Awaitable[str]]


@pytest.fixture
def active_campaign(demo: httpx.AsyncClient) -> Activate:
    """`await active_campaign(**changes)`: create the seed campaign (with changes), activate it, return its id."""

    async def make(client: httpx.AsyncClient = demo, **changes: Any) -> str:
        created = await client.post("/v1/campaigns", json=SEED_CAMPAIGN | changes)
        assert created.status_code == 201, created.text
        campaign_id: str = created.json()["id"]
        assert (await client.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
        return campaign_id

    return make


def ref(code: str | None) -> StatusRef | None:
    return StatusRef(code=code, name=NAMES[code]) if code else None


def status_changed(
    *,
    to: str = "shipped",
    before: str | None = "at_pickup_point",
    payment: str | None = "paid",
    order_id: str = "o-1",
    customer_id: str = "c-1",
    phone: str | None = "+7 916 123-45-67",
    consent: bool = True,
    name: str = "Анна",
    partner: str = DEMO_PARTNER,
    sequence: int = 2,
    published_at: datetime | None = None,
) -> Envelope[OrderStatusChanged]:
    status_type = TYPES[to]
    statuses = {"general": ref("accepted"), "payment": ref(payment), str(status_type): ref(to)}
    order = OrderSnapshot(
        order_id=order_id,
        statuses=CurrentStatuses.model_validate(statuses),
        amount=Decimal("1990.00"),
        currency="RUB",
        customer=Customer(id=customer_id, phone=phone, name=name, sms_consent=consent),
        placed_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    data = OrderStatusChanged(
        order_id=order_id,
        status_type=status_type,
        from_status=ref(before),
        to_status=StatusRef(code=to, name=NAMES[to]),
        to_include_in_analytics=False,
        sequence=sequence,
        order=order,
        occurred_at=datetime(2026, 3, 2, 8, 59, tzinfo=UTC),
    )
    return Envelope.wrap(
        data, source="/services/orders", partner_id=partner, event_id=str(uuid.uuid4()), time=published_at
    )


@pytest.fixture
def make_change() -> Callable[..., Envelope[OrderStatusChanged]]:
    return status_changed


class Topics:
    """Publishing status changes and reading what the service sent, through the real broker."""

    def __init__(self, settings: CampaignsSettings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.published = 0

    async def publish(self, *envelopes: Envelope[Any], raw: bytes | None = None) -> None:
        for envelope in envelopes:
            await self.producer.send_and_wait(
                self.settings.topic_status_changed, envelope.to_bytes(), key=envelope.key()
            )
            self.published += 1
        if raw is not None:
            await self.producer.send_and_wait(self.settings.topic_status_changed, raw, key=b"demo:bad")
            self.published += 1

    async def publish_sms_event(self, envelope: Envelope[Any]) -> None:
        await self.producer.send_and_wait(self.settings.topic_sms_events, envelope.to_bytes(), key=envelope.key())

    async def consumed_all(self, group: str | None = None) -> None:
        """Wait until the consumer group committed every status change published so far."""
        group = group or self.settings.consumer_group

        async def done() -> bool:
            offsets = await committed_offsets(self.settings.kafka_bootstrap_servers, group)
            topic = self.settings.topic_status_changed
            return sum(o for tp, o in offsets.items() if tp.topic == topic) >= self.published

        await wait_until(done, timeout_s=30, what=f"{group} to commit {self.published} status changes")

    async def send_sms(self) -> list[Envelope[SendSms]]:
        records = await read_topic(self.settings.kafka_bootstrap_servers, self.settings.topic_send_sms)
        return [decode(r.value, SendSms) for r in records]

    async def wait_for_send_sms(self, count: int) -> list[Envelope[SendSms]]:
        found: list[Envelope[SendSms]] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.send_sms()
            return len(found) >= count

        await wait_until(enough, timeout_s=30, what=f"{count} SendSms records")
        return found


@pytest.fixture
def topics(campaigns_settings: CampaignsSettings, producer: AIOKafkaProducer) -> Topics:
    return Topics(campaigns_settings, producer)
