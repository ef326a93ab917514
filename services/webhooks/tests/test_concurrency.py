"""Requests at once on one endpoint (docs/concurrency.md), a record no contract reads (to the dead-letter topic),
and an instance stopped mid-delivery (another sends the message again, with the same webhook-id, once its lease
expired)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from devtools.concurrency import at_once, codes, statuses
from devtools.pytest_plugin import partner_clients, read_topic, wait_until
from webhooks.app import create_app
from webhooks.settings import WebhooksSettings

from .conftest import Receiver, TestClock, create_endpoint, message_log, status_changed

Publish = Callable[..., Awaitable[None]]
AT_ONCE = 20


async def test_patches_with_one_etag_at_once_change_the_endpoint_once(acme: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(acme, "https://shop.example/hooks")
    url = f"/v1/webhooks/endpoints/{endpoint['id']}"

    answers = await at_once(
        *(acme.patch(url, json={"description": f"d{i}"}, headers={"If-Match": '"1"'}) for i in range(AT_ONCE))
    )

    assert statuses(answers) == {200: 1, 412: AT_ONCE - 1}
    assert codes(answers, 412) == {"version_mismatch": AT_ONCE - 1}
    (winner,) = [a.json()["description"] for a in answers if a.status_code == 200]
    read = (await acme.get(url)).json()
    assert read["version"] == 2 and read["description"] == winner

    rotations = await at_once(*(acme.post(f"{url}/rotate-secret") for _ in range(AT_ONCE)))
    assert statuses(rotations) == {200: AT_ONCE}
    assert sorted(r.json()["version"] for r in rotations) == list(range(3, AT_ONCE + 3))  # one after another


async def test_a_record_no_contract_reads_goes_to_the_dead_letter_topic(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish, producer: Any, webhooks_settings: WebhooksSettings
) -> None:
    await create_endpoint(acme, f"{receiver.url}/hooks")
    topic = webhooks_settings.topic(status_changed().topic)
    await producer.send_and_wait(topic, b"{not json", key=b"acme:o-1")
    await publish(status_changed("o-2", 1))  # the records after it go on

    await receiver.wait_for("/hooks", 1)
    dlq = f"{topic}.webhooks.dlq"

    async def dead_lettered() -> bool:
        return bool(await read_topic(webhooks_settings.kafka_bootstrap_servers, dlq))

    await wait_until(dead_lettered, what="the dead letter")
    (letter,) = await read_topic(webhooks_settings.kafka_bootstrap_servers, dlq)
    headers = dict(letter.headers)
    assert letter.value == b"{not json"
    assert headers["dlq-reason"] == b"malformed_json"
    assert headers["dlq-original-topic"] == topic.encode()


async def test_a_message_in_flight_when_its_instance_stops_is_sent_again_after_its_lease_with_the_same_id(
    webhooks_settings: WebhooksSettings, receiver: Receiver, publish: Publish, clock: TestClock
) -> None:
    hang = asyncio.Event()

    async def stuck_first(_: Any) -> Any:
        if not hang.is_set():
            hang.set()
            await asyncio.sleep(10)  # the first instance never hears back: it is stopped meanwhile
        return None

    receiver.answers["/hooks"] = stuck_first
    settings = webhooks_settings.model_copy(update={"delivery_timeout_s": 60.0, "delivery_lease_s": 30.0})
    first = create_app(settings, clock)
    async with first.router.lifespan_context(first), partner_clients(first, settings) as client_for:
        acme = client_for("acme", ("webhooks:manage",))
        endpoint = await create_endpoint(acme, f"{receiver.url}/hooks")
        await publish(status_changed())
        (sent,) = await receiver.wait_for("/hooks", 1)
        message_id = sent.headers["webhook-id"]
        in_flight = await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/messages/{message_id}/resend")
        assert in_flight.status_code == 409  # its outcome would overwrite the resend
        assert in_flight.json()["code"] == "message_in_flight"
    # The first instance is gone mid-delivery (its task cancelled at stop, as a kill -9 would end it): the message is
    # still leased to it.

    second = create_app(settings, clock)
    async with second.router.lifespan_context(second), partner_clients(second, settings) as client_for:
        acme = client_for("acme", ("webhooks:manage",))
        await asyncio.sleep(0.5)
        assert len(receiver.at("/hooks")) == 1  # the lease holds: nobody sends it meanwhile
        clock.advance(timedelta(seconds=31))
        again = (await receiver.wait_for("/hooks", 2))[1]
        assert again.headers["webhook-id"] == sent.headers["webhook-id"]
        assert again.payload(endpoint["secret"])["event_id"] == sent.payload(endpoint["secret"])["event_id"]

        async def succeeded() -> bool:
            return (await message_log(acme, endpoint["id"]))[0]["state"] == "succeeded"

        await wait_until(succeeded, what="the message delivered")
        (message,) = await message_log(acme, endpoint["id"])
        assert [a["response_status"] for a in message["attempts"]] == [200]  # the lost attempt left no record
