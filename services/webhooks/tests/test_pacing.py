"""A failing endpoint is paced as a circuit breaker paces it (docs/webhooks.md): after a failed attempt it is paused,
across instances (the pause is in the database); after the pause one message probes it; the first success gives it
all its slots again. A healthy endpoint beside it gets everything meanwhile. The pause runs on the test's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from starlette.responses import Response

from webhooks.app import create_app
from webhooks.settings import WebhooksSettings

from .conftest import Receiver, TestClock, attempts_recorded, create_endpoint, status_changed

Publish = Callable[..., Awaitable[None]]
CHANGES = 20
PAUSE = timedelta(seconds=1)  # the first pause of a streak (DELIVERY_FAILING_PAUSE_S)


async def test_a_failing_endpoint_gets_one_attempt_per_pause_across_instances_while_a_healthy_one_gets_everything(
    acme: httpx.AsyncClient,
    webhooks_settings: WebhooksSettings,
    clock: TestClock,
    receiver: Receiver,
    publish: Publish,
) -> None:
    receiver.answers["/down"] = lambda _: Response("down", status_code=500)
    down = await create_endpoint(acme, f"{receiver.url}/down")
    await create_endpoint(acme, f"{receiver.url}/up")
    second = create_app(webhooks_settings, clock)  # a second instance, claiming from the same database
    async with second.router.lifespan_context(second):
        await publish(*(status_changed(f"o-{n}", 1) for n in range(CHANGES)))

        await receiver.wait_for("/up", CHANGES)
        await asyncio.sleep(0.5)
        # What was in flight when the first failure came back (at most each instance's four slots), then nothing:
        # the clock stands still, so the pause never ends.
        first_round = len(receiver.at("/down"))
        assert 1 <= first_round <= 2 * webhooks_settings.delivery_per_endpoint, first_round
        for probe in range(1, 4):
            await attempts_recorded(acme, down["id"], first_round + probe - 1)
            clock.advance(PAUSE)  # the pause is over: one message probes, whichever instance claims it
            await receiver.wait_for("/down", first_round + probe)
            await asyncio.sleep(0.5)
            assert len(receiver.at("/down")) == first_round + probe, "more than one probe after a pause"
        await attempts_recorded(acme, down["id"], first_round + 3)
    read = (await acme.get(f"/v1/webhooks/endpoints/{down['id']}")).json()
    assert read["enabled"] is True and read["failing_since"] is not None


async def test_the_first_success_after_the_pause_gives_the_endpoint_all_its_slots_at_once(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, clock: TestClock, receiver: Receiver, publish: Publish
) -> None:
    down = True
    in_flight = 0
    at_arrival: list[int] = []  # the requests in flight as each successful one arrives, itself included

    async def answer(_: Any) -> Response:
        nonlocal in_flight
        if down:
            return Response("down", status_code=503)
        in_flight += 1
        at_arrival.append(in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return Response("ok")

    receiver.answers["/flaky"] = answer
    endpoint = await create_endpoint(acme, f"{receiver.url}/flaky")
    await publish(status_changed("o-first", 1))
    await receiver.wait_for("/flaky", 1)
    await attempts_recorded(acme, endpoint["id"], 1)
    await publish(*(status_changed(f"o-{n}", 1) for n in range(12)))  # due at once, and the endpoint paused
    await asyncio.sleep(1.0)
    assert len(receiver.at("/flaky")) == 1, "sent to a paused endpoint"

    down = False
    clock.advance(PAUSE)  # one probe; its success reopens the endpoint, with no other move of the clock
    await receiver.wait_for("/flaky", 13, timeout_s=10)
    assert at_arrival[:2] == [1, 1], f"the probe was not alone: {at_arrival}"
    assert max(at_arrival) == webhooks_settings.delivery_per_endpoint, at_arrival
    await attempts_recorded(acme, endpoint["id"], 13)
    assert (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()["failing_since"] is None


async def test_the_api_shows_a_failing_endpoints_pause_and_nothing_once_it_is_healthy(
    acme: httpx.AsyncClient, clock: TestClock, receiver: Receiver, publish: Publish
) -> None:
    down = True
    receiver.answers["/flaky"] = lambda _: Response("down", status_code=503) if down else None
    endpoint = await create_endpoint(acme, f"{receiver.url}/flaky")
    failed_at = clock.now()
    await publish(status_changed("o-1", 1))
    await attempts_recorded(acme, endpoint["id"], 1)

    paused = (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
    assert paused["failing_since"] is not None
    assert datetime.fromisoformat(paused["paused_until"]) == failed_at + PAUSE  # the next attempt, the probe
    listed = (await acme.get("/v1/webhooks/endpoints")).json()["items"]
    assert [e["paused_until"] for e in listed] == [paused["paused_until"]]

    down = False
    clock.advance(timedelta(seconds=5))  # past the pause and the message's own retry: the probe succeeds
    await attempts_recorded(acme, endpoint["id"], 2)
    healthy = (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
    assert healthy["failing_since"] is None and healthy["paused_until"] is None


async def test_a_new_url_clears_the_pause_and_a_new_description_keeps_it(
    acme: httpx.AsyncClient, clock: TestClock, receiver: Receiver, publish: Publish
) -> None:
    receiver.answers["/old"] = lambda _: Response("down", status_code=500)
    endpoint = await create_endpoint(acme, f"{receiver.url}/old")
    url = f"/v1/webhooks/endpoints/{endpoint['id']}"
    await publish(status_changed("o-1", 1))
    await attempts_recorded(acme, endpoint["id"], 1)
    await publish(status_changed("o-2", 1))  # due now, held by the pause (the clock stands still)

    described = await acme.patch(url, json={"description": "Shop"}, headers={"If-Match": "*"})
    assert described.status_code == 200, described.text
    assert described.json()["failing_since"] is not None and described.json()["paused_until"] is not None
    await asyncio.sleep(1.0)
    assert len(receiver.at("/old")) == 1, "a new description ended the pause"

    moved = await acme.patch(url, json={"url": f"{receiver.url}/new"}, headers={"If-Match": "*"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["failing_since"] is None and moved.json()["paused_until"] is None
    await receiver.wait_for("/new", 1, timeout_s=5)  # o-2 at once, with no move of the clock
