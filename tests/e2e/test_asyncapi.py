"""Each service's /asyncapi.json lists every topic it consumes AND every topic it writes, with the message schema.

The outbox relay publishes with aiokafka, not with FastStream publishers, so written topics appear only because
each service declares them (`servicekit.app.Publishes`); this test fails for a service that forgets one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from contracts.topics import Topic, prefixed
from devtools.platform import Platform

CONSUMES = {
    "status-registry": {Topic.CAMPAIGN_STATUS_USAGE},
    "orders": {Topic.ORDERS_INBOUND, Topic.ORDERS_INBOUND_RETRY},
    "campaigns": {Topic.ORDER_STATUS_CHANGED, Topic.SMS_EVENTS},
    "notifier": {Topic.SEND_SMS},
}
# Written topics with the contracts of their messages (none: dead letters and retries, records of another topic).
PUBLISHES: dict[str, dict[Topic, tuple[str, ...]]] = {
    "status-registry": {
        Topic.STATUS_DEFINITIONS: ("StatusDefinitionUpserted", "StatusDefinitionArchived"),
        Topic.CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ: (),
    },
    "orders": {
        Topic.ORDER_STATUS_CHANGED: ("OrderStatusChanged",),
        Topic.ORDERS_INBOUND_RETRY: (),
        Topic.ORDERS_INBOUND_DLQ: (),
    },
    "campaigns": {
        Topic.SEND_SMS: ("SendSms",),
        Topic.CAMPAIGN_STATUS_USAGE: ("CampaignStatusUsage",),
        Topic.ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ: (),
        Topic.SMS_EVENTS_CAMPAIGNS_DLQ: (),
    },
    "notifier": {
        Topic.SMS_EVENTS: ("SmsDispatched", "SmsFailed", "SmsDelivered"),
        Topic.SEND_SMS_DLQ: (),
    },
}


def channels(document: dict[str, Any], *, published: bool) -> dict[str, str]:
    """address -> the message payload schema (as JSON text) of every written (or every consumed) channel."""
    found = {}
    for name, channel in document["channels"].items():
        if name.endswith(":Publisher") != published:  # subscribers carry titles of their own
            continue
        (message,) = channel["messages"].values()
        payload = document["components"]["messages"][message["$ref"].rsplit("/", 1)[-1]]["payload"]
        schemas = document["components"]["schemas"]
        found[channel["address"]] = json.dumps(schemas.get(payload["$ref"].rsplit("/", 1)[-1], payload))
    return found


async def test_every_service_documents_what_it_consumes_and_what_it_writes(platform: Platform) -> None:
    for service, written in PUBLISHES.items():
        async with httpx.AsyncClient(base_url=platform.url(service)) as client:
            document = (await client.get("/asyncapi.json")).json()
        consumed = set(channels(document, published=False))
        assert {prefixed(t, platform.prefix) for t in CONSUMES[service]} <= consumed, (service, consumed)
        published = channels(document, published=True)
        assert set(published) == {prefixed(t, platform.prefix) for t in written}, (service, set(published))
        for topic, contracts in written.items():
            schema = published[prefixed(topic, platform.prefix)]
            for contract in contracts:
                assert contract in schema, (service, topic, contract)  # the envelope of that contract
