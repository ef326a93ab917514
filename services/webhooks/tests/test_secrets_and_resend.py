"""Secret rotation (both signatures during the grace, the older one gone at the next rotation), resending one
message with its own webhook-id, and an event delivered twice by Kafka making one message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .conftest import Receiver, attempts_recorded, create_endpoint, message_log, status_changed

Publish = Callable[..., Awaitable[None]]


async def test_during_a_rotation_both_secrets_sign_and_resend_keeps_the_id(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish
) -> None:
    endpoint = await create_endpoint(acme, f"{receiver.url}/hooks")
    first = endpoint["secret"]
    rotated = await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200
    second = rotated.json()["secret"]
    assert second.startswith("whsec_") and second != first
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    read = (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
    assert 23.9 < (expires - datetime.fromisoformat(read["updated_at"])).total_seconds() / 3600 <= 24.01

    event = status_changed("o-1", 1)
    await publish(event, event)  # Kafka redelivers: still one message
    (got,) = await receiver.wait_for("/hooks", 1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.payload(first)["event_id"] == event.id  # the old secret verifies
    assert got.payload(second)["event_id"] == event.id  # and the new one

    await attempts_recorded(acme, endpoint["id"], 1)  # a message in flight cannot be resent (409 message_in_flight)
    (message,) = await message_log(acme, endpoint["id"])
    resent = await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/messages/{message['id']}/resend")
    assert resent.status_code == 202
    again = (await receiver.wait_for("/hooks", 2))[1]
    assert again.headers["webhook-id"] == got.headers["webhook-id"] == message["id"]
    assert again.body == got.body
    await attempts_recorded(acme, endpoint["id"], 2)
    (message,) = await message_log(acme, endpoint["id"])
    assert [a["response_status"] for a in message["attempts"]] == [200, 200]
    missing = await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/messages/msg_nope/resend")
    assert missing.status_code == 404

    third = (await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret")).json()["secret"]
    await publish(status_changed("o-2", 1))
    latest = (await receiver.wait_for("/hooks", 3))[2]
    assert len(latest.headers["webhook-signature"].split(" ")) == 2
    latest.payload(second)
    latest.payload(third)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(latest.body, latest.headers)  # two rotations ago: no longer signs
    await asyncio.sleep(0)
