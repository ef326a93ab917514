"""The product documentation's example: the statuses a demo partner defines (used by `make run` and tests), how
`make run` adds them beside a user's own, and the seed campaign."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import StatusDefinition
from devtools.platform import Platform

DEMO_PARTNER = "demo"

# (type, code, Russian display name, English name), in display order within each type.
EXAMPLE_STATUSES: tuple[tuple[str, str, str, str], ...] = (
    ("general", "accepted", "Принят", "Accepted"),
    ("general", "agreed", "Согласован", "Agreed"),
    ("general", "in_progress", "В работе", "In progress"),
    ("general", "completed", "Выполнен", "Completed"),
    ("delivery", "at_pickup_point", "В пункте выдачи", "At pickup point"),
    ("delivery", "shipped", "Отгружен", "Shipped"),
    ("delivery", "at_delivery_point", "В пункте доставки", "At delivery point"),
    ("delivery", "delivered", "Доставлен", "Delivered"),
    ("payment", "invoice_issued", "Счёт выставлен", "Invoice issued"),
    ("payment", "awaiting_payment", "Ожидает оплаты", "Awaiting payment"),
    ("payment", "paid", "Оплачен", "Paid"),
)

ANALYTICS = {"completed", "delivered", "paid"}


def example_status_list() -> list[dict[str, Any]]:
    """The body of `PUT /v1/statuses` that defines the example; the first status of each type is initial."""
    seen: set[str] = set()
    body = []
    for position, (status_type, code, name_ru, name_en) in enumerate(EXAMPLE_STATUSES):
        body.append(
            {
                "code": code,
                "type": status_type,
                "name": name_ru,
                "localized_names": {"en": name_en},
                "position": position,
                "is_initial": status_type not in seen,
                "include_in_analytics": code in ANALYTICS,
            }
        )
        seen.add(status_type)
    return body


@dataclass
class AddedStatuses:
    """What `add_example_statuses` did, by code, and the partner's statuses afterwards (not archived)."""

    created: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # there already, left exactly as they are
    statuses: list[dict[str, Any]] = field(default_factory=list)


async def add_example_statuses(registry: httpx.AsyncClient, needed: Collection[str]) -> AddedStatuses:
    """The example's statuses on a partner who may have used the console since (`make run`, every time).

    Only what is missing is added: an example status that does not exist is created (initial only when its type
    has no initial status yet), one in `needed` (the demo's orders and campaign name it) that a user archived is
    restored. Nothing else changes: no status is archived, a user's own or edited status stays as it is. Not the
    bulk sync (`PUT /v1/statuses`): it would archive every status of the user's, and is refused (409
    `status_in_use`) once an active campaign names one."""
    existing = {status["code"]: status for status in await all_statuses(registry)}
    initial_types = {s["type"] for s in existing.values() if s["is_initial"] and not s["archived"]}
    added = AddedStatuses()
    for wanted in example_status_list():
        code, current = wanted["code"], existing.get(wanted["code"])
        if current is None:
            wanted["is_initial"] = wanted["is_initial"] and wanted["type"] not in initial_types
            (await registry.post("/v1/statuses", json=wanted)).raise_for_status()
            initial_types |= {wanted["type"]} if wanted["is_initial"] else set()
            added.created.append(code)
        elif current["archived"] and code in needed:
            if current["is_initial"] and current["type"] in initial_types:  # restoring it as initial is refused
                demoted = await registry.patch(
                    f"/v1/statuses/{code}", json={"is_initial": False}, headers={"If-Match": f'"{current["version"]}"'}
                )
                demoted.raise_for_status()
            restored = (await registry.post(f"/v1/statuses/{code}/restore")).raise_for_status().json()
            initial_types |= {restored["type"]} if restored["is_initial"] else set()
            added.restored.append(code)
        else:
            added.kept.append(code)
    added.statuses = [status for status in await all_statuses(registry) if not status["archived"]]
    return added


async def all_statuses(registry: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every status of the client's partner, archived ones included, page after page."""
    statuses: list[dict[str, Any]] = []
    params: dict[str, Any] = {"include_archived": "true", "limit": 500}
    while True:
        page = (await registry.get("/v1/statuses", params=params)).raise_for_status().json()
        statuses += page["items"]
        if not page["next_cursor"]:
            return statuses
        params["cursor"] = page["next_cursor"]


def example_definitions(partner_id: str = DEMO_PARTNER) -> list[StatusDefinition]:
    """The example statuses as the registry would publish them (version 1), for tests without the registry."""
    now = datetime.now(UTC)
    return [
        StatusDefinition(partner_id=partner_id, version=1, created_at=now, updated_at=now, **fields)
        for fields in example_status_list()
    ]


async def publish_definitions(bootstrap: str, topic: str, definitions: list[StatusDefinition]) -> None:
    """Put definitions on the registry topic exactly as the registry's relay does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for definition in definitions:
            data = (
                StatusDefinitionArchived(definition=definition, version=definition.version)
                if definition.archived
                else StatusDefinitionUpserted(definition=definition)
            )
            envelope = Envelope.wrap(data, source="/tests", partner_id=definition.partner_id)
            await producer.send(topic, envelope.to_bytes(), key=envelope.key())
        await producer.flush()
    finally:
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
    """The seed example through the public APIs (end-to-end and browser tests): statuses, then the active
    campaign; returns its id."""
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
