"""Every registry change reaches `registry.status-definitions.v1` exactly once, through the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord

from contracts.envelope import decode_any
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from devtools.pytest_plugin import Infrastructure, read_topic, wait_until
from servicekit.outbox import BatchSender, Outgoing
from status_registry.settings import RegistrySettings

PAID = {"code": "paid", "name": "Оплачен", "type": "payment"}
STATUS_EVENTS = (StatusDefinitionUpserted, StatusDefinitionArchived)


async def published(settings: RegistrySettings, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Wait until the relay has published `count` records, then check that no more arrive."""
    records: list[ConsumerRecord[bytes, bytes]] = []

    async def enough() -> bool:
        nonlocal records
        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_definitions)
        return len(records) >= count

    await wait_until(enough, what=f"{count} status-definition records")
    assert len(records) == count, [r.value for r in records]
    return records


def summary(record: ConsumerRecord[bytes, bytes]) -> tuple[Any, ...]:
    assert record.value is not None
    envelope = decode_any(record.value, STATUS_EVENTS)
    assert isinstance(envelope.data, StatusDefinitionUpserted | StatusDefinitionArchived)
    return record.key, envelope.type, envelope.data.definition.version, envelope.partnerid


async def test_each_change_publishes_one_event_in_order_per_key(
    acme: httpx.AsyncClient, registry_settings: RegistrySettings
) -> None:
    await acme.post("/v1/statuses", json=PAID)
    await acme.post("/v1/statuses", json=PAID)  # 409: rolled back, publishes nothing
    await acme.patch("/v1/statuses/paid", json={"include_in_analytics": True}, headers={"If-Match": '"1"'})
    await acme.patch("/v1/statuses/paid", json={"include_in_analytics": True}, headers={"If-Match": '"2"'})  # no-op
    await acme.delete("/v1/statuses/paid")
    await acme.post("/v1/statuses/paid/restore")

    records = await published(registry_settings, 4)
    assert [summary(r) for r in records] == [
        (b"acme:paid", "status-definition.upserted.v1", 1, "acme"),
        (b"acme:paid", "status-definition.upserted.v1", 2, "acme"),
        (b"acme:paid", "status-definition.archived.v1", 3, "acme"),
        (b"acme:paid", "status-definition.upserted.v1", 4, "acme"),
    ]


async def test_bulk_sync_publishes_changes_only(acme: httpx.AsyncClient, registry_settings: RegistrySettings) -> None:
    body = {"statuses": [PAID, {"code": "shipped", "name": "Отгружен", "type": "delivery"}]}
    assert (await acme.put("/v1/statuses", json=body)).status_code == 200
    assert (await acme.put("/v1/statuses", json=body)).status_code == 200  # the same body: nothing to publish
    await published(registry_settings, 2)

    assert (await acme.put("/v1/statuses", json={"statuses": [PAID]})).status_code == 200
    records = await published(registry_settings, 3)
    assert [summary(r)[1:3] for r in records if r.key == b"acme:shipped"] == [
        ("status-definition.upserted.v1", 1),
        ("status-definition.archived.v1", 2),
    ]


async def test_a_reorder_publishes_the_statuses_that_moved_only(
    acme: httpx.AsyncClient, registry_settings: RegistrySettings
) -> None:
    for code, position in (("shipped", 10), ("at_pickup", 20), ("delivered", 30)):
        body = {"code": code, "name": code, "type": "delivery", "position": position}
        assert (await acme.post("/v1/statuses", json=body)).status_code == 201
    order = {"codes": ["at_pickup", "shipped", "delivered"]}
    assert (await acme.put("/v1/statuses/order/delivery", json=order)).status_code == 200
    assert (await acme.put("/v1/statuses/order/delivery", json=order)).status_code == 200  # nothing moves
    records = await published(registry_settings, 5)  # three creates and the two that moved, once each
    assert sorted(summary(r)[0::2] for r in records) == [
        (b"acme:at_pickup", 1),
        (b"acme:at_pickup", 2),
        (b"acme:delivered", 1),
        (b"acme:shipped", 1),
        (b"acme:shipped", 2),
    ]


async def test_the_catalog_of_another_service_sees_the_registry(
    acme: httpx.AsyncClient, registry_settings: RegistrySettings, infrastructure: Infrastructure
) -> None:
    from servicekit.catalog import StatusCatalog

    await acme.put("/v1/statuses", json={"statuses": [PAID]})
    await acme.patch("/v1/statuses/paid", json={"name": "Оплачено"}, headers={"If-Match": '"1"'})
    await published(registry_settings, 2)
    catalog = StatusCatalog(infrastructure.kafka_bootstrap, registry_settings.topic_status_definitions)
    await catalog.start()
    try:
        await catalog.ready.wait()
        paid = catalog.get("acme", "paid")
        assert paid is not None and (paid.name, paid.version) == ("Оплачено", 2)
    finally:
        await catalog.stop()


async def test_a_write_answers_once_its_events_are_on_the_topic(
    acme: httpx.AsyncClient, registry_settings: RegistrySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-your-writes for the other services: when the registry answers, the event can be read already, however
    slowly the relay publishes."""
    send_all = BatchSender.send_all

    async def slow_send_all(self: BatchSender, records: Iterable[Outgoing]) -> None:
        batch = list(records)
        await asyncio.sleep(0.5)
        await send_all(self, batch)

    monkeypatch.setattr(BatchSender, "send_all", slow_send_all)
    for n, code in enumerate(("paid", "shipped", "delivered"), start=1):
        created = await acme.post("/v1/statuses", json={"code": code, "name": code.title(), "type": "delivery"})
        assert created.status_code == 201, created.text
        records = await read_topic(
            registry_settings.kafka_bootstrap_servers, registry_settings.topic_status_definitions
        )
        assert len(records) == n  # read at once, no waiting
    archived = await acme.delete("/v1/statuses/paid")
    assert archived.status_code == 200, archived.text
    records = await read_topic(registry_settings.kafka_bootstrap_servers, registry_settings.topic_status_definitions)
    assert any(summary(r)[:2] == (b"acme:paid", "status-definition.archived.v1") for r in records)
