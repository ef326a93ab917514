from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from devtools.platform import SERVICES, Platform
from devtools.pytest_plugin import Infrastructure
from devtools.scenario import example_status_list


@pytest.fixture
async def platform(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Platform]:
    """All four services running as processes; stopped and cleaned up after the test."""
    platform = Platform(infrastructure, tmp_path)
    await platform.create()
    try:
        for service in SERVICES:
            platform.start(service)
        await platform.wait_ready()
        yield platform
    finally:
        platform.stop_all()
        await platform.drop()


@pytest.fixture
async def producer(infrastructure: Infrastructure) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    yield producer
    await producer.stop()


SEED_CAMPAIGN = {
    "name": "Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name | default: 'Hello' }}, your order {{ order.id }} is {{ to_status.name | downcase }}!",
    "sender": "DemoShop",
    "quiet_hours": "deliver_immediately",
}


async def define_example(platform: Platform, partner: str) -> str:
    """The seed example through the public APIs: statuses, then the active campaign; returns its id."""
    async with platform.client("status-registry", partner) as registry:
        response = await registry.put("/v1/statuses", json={"statuses": example_status_list()})
        assert response.status_code == 200, response.text
    async with platform.client("campaigns", partner) as campaigns:
        # At once, no retry: the registry answered once its statuses were on the topic, and campaigns reads the
        # topic up to its end before it decides on a code (read-your-writes, docs/architecture.md).
        created = await campaigns.post("/v1/campaigns", json=SEED_CAMPAIGN)
        assert created.status_code == 201, created.text
        campaign_id = str(created.json()["id"])
        activated = await campaigns.post(f"/v1/campaigns/{campaign_id}/activate")
        assert activated.status_code == 200, activated.text
    return campaign_id
