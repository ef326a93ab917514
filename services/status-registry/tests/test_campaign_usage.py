"""A status named by an active campaign cannot be archived: the registry's replica of campaign usage."""

from __future__ import annotations

import httpx
from aiokafka import AIOKafkaProducer

from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import Envelope
from contracts.topics import Topic
from devtools.pytest_plugin import read_topic, wait_until
from status_registry.settings import RegistrySettings

PAID = {"code": "paid", "name": "Оплачен", "type": "payment"}
SHIPPED = {"code": "shipped", "name": "Отгружен", "type": "delivery"}


async def publish(settings: RegistrySettings, usage: CampaignStatusUsage | bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        topic = settings.topic(Topic.CAMPAIGN_STATUS_USAGE)
        if isinstance(usage, bytes):
            await producer.send_and_wait(topic, usage, key=b"acme:x")
        else:
            envelope = Envelope.wrap(usage, source="/tests", partner_id=usage.partner_id)
            await producer.send_and_wait(topic, envelope.to_bytes(), key=envelope.key())
    finally:
        await producer.stop()


def usage(active: bool, version: int, codes: list[str], partner: str = "acme") -> CampaignStatusUsage:
    return CampaignStatusUsage(
        campaign_id="c-1", partner_id=partner, name="Shipped and paid", active=active, codes=codes, version=version
    )


async def test_archiving_a_status_an_active_campaign_names_is_refused(
    acme: httpx.AsyncClient, registry_settings: RegistrySettings
) -> None:
    await acme.put("/v1/statuses", json={"statuses": [PAID, SHIPPED]})
    await publish(registry_settings, usage(True, 2, ["paid", "shipped"]))
    await publish(registry_settings, usage(False, 1, ["paid", "shipped"]))  # older: must not win
    await publish(registry_settings, b"{not json")
    await publish(registry_settings, usage(True, 1, ["paid"], partner="globex"))  # another partner's campaign

    async def refused() -> bool:
        answer = await acme.delete("/v1/statuses/paid")
        if answer.status_code == 200:  # the usage had not arrived yet: undo the archive and ask again
            await acme.post("/v1/statuses/paid/restore")
        return answer.status_code == 409

    await wait_until(refused, timeout_s=30, what="the registry to learn the campaign's usage")
    answer = await acme.delete("/v1/statuses/shipped")
    assert answer.status_code == 409 and "'Shipped and paid' (c-1)" in answer.json()["detail"]
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "status_in_use"
    assert answer.json()["campaigns"] == [{"id": "c-1", "name": "Shipped and paid"}]
    sync = await acme.put("/v1/statuses", json={"statuses": [SHIPPED]})  # would archive 'paid'
    assert sync.status_code == 409 and "paid" in sync.json()["detail"]

    await publish(registry_settings, usage(False, 3, ["paid", "shipped"]))  # paused

    async def archived() -> bool:
        return (await acme.delete("/v1/statuses/paid")).status_code == 200

    await wait_until(archived, timeout_s=30, what="the pause to release the status")
    dlq = registry_settings.topic(Topic.CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ)
    (dead,) = await read_topic(registry_settings.kafka_bootstrap_servers, dlq)
    assert dict(dead.headers)["dlq-reason"] == b"malformed_json"
