"""Deliveries through the real broker, database and an HTTP receiver on 127.0.0.1, signatures checked with the
standardwebhooks verifier; the schedule's clock is the test's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from starlette.responses import Response

from devtools.pytest_plugin import partner_clients, wait_until
from webhooks.app import create_app
from webhooks.domain import RETRY_DELAYS
from webhooks.settings import WebhooksSettings

from .conftest import Receiver, TestClock, attempts_recorded, create_endpoint, message_log, sms_failed, status_changed

Publish = Callable[..., Awaitable[None]]


async def test_an_event_reaches_the_endpoints_that_want_it_signed_and_logged(
    acme: httpx.AsyncClient, client_for: Any, receiver: Receiver, publish: Publish
) -> None:
    receiver.answers["/all"] = lambda _: Response("x" * 3000, status_code=200)
    everything = await create_endpoint(acme, f"{receiver.url}/all", event_types=["order.status_changed", "sms.failed"])
    await create_endpoint(acme, f"{receiver.url}/payments", status_type="payment")
    receiver.answers["/moved"] = lambda _: Response("", status_code=302, headers={"Location": "/elsewhere"})
    moved = await create_endpoint(acme, f"{receiver.url}/moved")
    await create_endpoint(client_for("globex", ("webhooks:manage",)), f"{receiver.url}/globex")

    change = status_changed("o-1", 3)
    await publish(change, sms_failed("o-1"))

    got = await receiver.wait_for("/all", 2)
    payloads = [r.payload(everything["secret"]) for r in got]  # raises unless the signature verifies
    by_type = {p["type"]: p for p in payloads}
    assert by_type["order.status_changed"]["version"] == 1
    assert by_type["order.status_changed"]["event_id"] == change.id
    assert by_type["order.status_changed"]["data"]["sequence"] == 3
    assert by_type["order.status_changed"]["data"]["order_id"] == "o-1"
    assert by_type["sms.failed"]["data"]["reason"] == "opted_out"
    assert all(r.headers["webhook-id"].startswith("msg_") for r in got)

    await attempts_recorded(acme, everything["id"], 2)
    log = await message_log(acme, everything["id"])
    assert {m["state"] for m in log} == {"succeeded"}
    attempt = log[0]["attempts"][0]
    assert attempt["response_status"] == 200
    assert attempt["latency_ms"] >= 0
    assert attempt["response_excerpt"] == "x" * 1024  # the answer's body, capped
    assert {m["id"] for m in log} == {r.headers["webhook-id"] for r in got}
    await asyncio.sleep(0.5)
    assert receiver.at("/payments") == []  # a delivery status change is not a payment one
    assert receiver.at("/globex") == []  # another partner's endpoint hears nothing of acme
    await attempts_recorded(acme, moved["id"], 1)
    (redirected,) = await message_log(acme, moved["id"])
    assert [a["response_status"] for a in redirected["attempts"]] == [302]
    assert redirected["state"] == "pending"  # a failed attempt, retried on the schedule
    assert receiver.at("/elsewhere") == []  # never followed


async def test_failures_are_retried_on_the_schedule_with_the_same_id_then_given_up(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish, clock: TestClock
) -> None:
    receiver.answers["/down"] = lambda _: Response("busy", status_code=500)
    endpoint = await create_endpoint(acme, f"{receiver.url}/down")
    await publish(status_changed())

    await receiver.wait_for("/down", 1)
    await attempts_recorded(acme, endpoint["id"], 1)
    for attempt, delay in enumerate(RETRY_DELAYS, start=2):
        clock.advance(delay - timedelta(seconds=1))
        await asyncio.sleep(0.4)
        assert len(receiver.at("/down")) == attempt - 1, f"attempt {attempt} came before its time"
        clock.advance(timedelta(seconds=1))
        await receiver.wait_for("/down", attempt)
        await attempts_recorded(acme, endpoint["id"], attempt)

    await asyncio.sleep(0.4)
    clock.advance(timedelta(days=1))
    await asyncio.sleep(0.4)
    got = receiver.at("/down")
    assert len(got) == 8
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.headers["webhook-signature"] for r in got}) >= 1
    (message,) = await message_log(acme, endpoint["id"])
    assert message["state"] == "failed"
    assert [a["response_status"] for a in message["attempts"]] == [500] * 8
    times = [a["attempted_at"] for a in message["attempts"]]
    assert times == sorted(times)
    read = (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
    assert read["enabled"] is True and read["failing_since"] is not None

    # Five days of failures with no success in between disable the endpoint, saying why.
    clock.advance(timedelta(days=3))
    resent = await acme.post(f"/v1/webhooks/endpoints/{endpoint['id']}/messages/{message['id']}/resend")
    assert resent.status_code == 202
    await receiver.wait_for("/down", 9)

    async def disabled() -> bool:
        return not (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()["enabled"]

    await wait_until(disabled, what="the endpoint disabled")
    read = (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
    assert "5 days" in read["disabled_reason"] and read["disabled_cause"] == "failing_5_days"


async def test_retry_after_sets_the_next_attempt_capped(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish, clock: TestClock
) -> None:
    answers = iter(
        [Response("slow down", status_code=429, headers={"Retry-After": "120"}),
         Response("later", status_code=503, headers={"Retry-After": "999999"})]
    )  # fmt: skip
    receiver.answers["/busy"] = lambda _: next(answers, Response("ok"))
    endpoint = await create_endpoint(acme, f"{receiver.url}/busy")
    await publish(status_changed())

    await receiver.wait_for("/busy", 1)
    await attempts_recorded(acme, endpoint["id"], 1)
    clock.advance(RETRY_DELAYS[0])  # the schedule's 5 s: not yet, the endpoint asked for 120
    await asyncio.sleep(0.5)
    assert len(receiver.at("/busy")) == 1
    clock.advance(timedelta(seconds=115))
    await receiver.wait_for("/busy", 2)
    await attempts_recorded(acme, endpoint["id"], 2)

    (message,) = await message_log(acme, endpoint["id"])
    assert message["state"] == "pending"
    second = message["attempts"][1]["attempted_at"]
    assert message["next_attempt_at"] > second
    clock.advance(timedelta(hours=1))  # Retry-After 999999 s is taken as the cap, an hour
    await receiver.wait_for("/busy", 3)
    await attempts_recorded(acme, endpoint["id"], 3)
    (message,) = await message_log(acme, endpoint["id"])
    assert message["state"] == "succeeded"


async def test_410_gone_disables_the_endpoint_and_resend_failed_sends_again(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish
) -> None:
    gone = True
    receiver.answers["/gone"] = lambda _: Response("gone", status_code=410) if gone else Response("ok")
    endpoint = await create_endpoint(acme, f"{receiver.url}/gone")
    await publish(status_changed("o-1", 1))
    await receiver.wait_for("/gone", 1)

    async def disabled() -> bool:
        return not (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()["enabled"]

    await wait_until(disabled, what="the endpoint disabled by its 410")
    read = await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")
    assert read.json()["disabled_reason"] == "the endpoint answered 410 Gone"
    assert read.json()["disabled_cause"] == "gone_410"
    (message,) = await message_log(acme, endpoint["id"])
    assert message["state"] == "failed"

    await publish(status_changed("o-2", 1))  # a disabled endpoint gets no message
    await asyncio.sleep(1.0)
    assert len(await message_log(acme, endpoint["id"])) == 1

    gone = False
    enabled = await acme.patch(
        f"/v1/webhooks/endpoints/{endpoint['id']}", json={"enabled": True}, headers={"If-Match": read.headers["etag"]}
    )
    assert enabled.json()["disabled_reason"] is None and enabled.json()["disabled_cause"] is None
    resent = await acme.post(
        f"/v1/webhooks/endpoints/{endpoint['id']}/resend-failed", json={"since": message["created_at"]}
    )
    assert resent.json() == {"resent": 1}
    got = await receiver.wait_for("/gone", 2)
    assert got[1].headers["webhook-id"] == message["id"]
    assert got[1].payload(endpoint["secret"])["data"]["order_id"] == "o-1"
    await attempts_recorded(acme, endpoint["id"], 2)
    (message,) = await message_log(acme, endpoint["id"])
    assert message["state"] == "succeeded"
    assert [a["response_status"] for a in message["attempts"]] == [410, 200]


async def test_one_orders_changes_arrive_in_order_and_a_failure_holds_back_only_that_order(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish, clock: TestClock
) -> None:
    failures = {("o-a", 2): 1}  # the second change of o-a fails once

    def answer(received: Any) -> Response:
        data = received.payload(secret)["data"]
        key = (data["order_id"], data["sequence"])
        if failures.get(key, 0) > 0:
            failures[key] -= 1
            return Response("no", status_code=500)
        return Response("ok")

    receiver.answers["/orders"] = answer
    endpoint = await create_endpoint(acme, f"{receiver.url}/orders")
    secret = endpoint["secret"]
    await publish(*(status_changed("o-a", n) for n in (1, 2, 3, 4)), status_changed("o-b", 1), status_changed("o-b", 2))

    async def failed_once() -> bool:
        log = await message_log(acme, endpoint["id"])
        return any(a["response_status"] == 500 for m in log for a in m["attempts"])

    await wait_until(failed_once, what="o-a 2's failure recorded")
    clock.advance(timedelta(seconds=1))  # the endpoint's pause after a failure, under the schedule's 5 s for o-a 2
    await receiver.wait_for("/orders", 4)  # o-a 1, o-a 2 (failed), o-b 1 and 2
    await asyncio.sleep(0.5)

    def arrivals() -> list[tuple[str, int]]:
        return [(d["order_id"], d["sequence"]) for d in (r.payload(secret)["data"] for r in receiver.at("/orders"))]

    assert ("o-a", 3) not in arrivals() and ("o-a", 4) not in arrivals()  # held back behind the failed 2
    assert [s for o, s in arrivals() if o == "o-b"] == [1, 2]  # the other order went on
    await attempts_recorded(acme, endpoint["id"], 4)
    log = await message_log(acme, endpoint["id"])
    pending = {m["sequence"]: m["next_attempt_at"] for m in log if m["order_id"] == "o-a" and m["state"] == "pending"}
    assert sorted(pending) == [2, 3, 4]
    assert pending[2] is not None  # due again on the schedule
    assert pending[3] is None and pending[4] is None  # held: no claim scans them until 2 is done

    clock.advance(RETRY_DELAYS[0] - timedelta(seconds=1))
    await receiver.wait_for("/orders", 7)
    assert [s for o, s in arrivals() if o == "o-a"] == [1, 2, 2, 3, 4]
    await attempts_recorded(acme, endpoint["id"], 7)
    assert (await acme.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()["failing_since"] is None  # a success


async def test_a_slow_endpoint_does_not_delay_a_fast_one(
    webhooks_settings: WebhooksSettings, clock: TestClock, receiver: Receiver, publish: Publish
) -> None:
    async def slow(_: Any) -> Response:
        await asyncio.sleep(1.5)
        return Response("ok")

    receiver.answers["/slow"] = slow
    # Six requests at once in all, two per endpoint: the slow one can never take the fast one's slots.
    settings = webhooks_settings.model_copy(update={"delivery_concurrency": 6, "delivery_per_endpoint": 2})
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app), partner_clients(app, settings) as client_for:
        acme = client_for("acme", ("webhooks:manage",))
        await create_endpoint(acme, f"{receiver.url}/slow")
        await create_endpoint(acme, f"{receiver.url}/fast")
        started = time.monotonic()
        await publish(*(status_changed(f"o-{n}", 1) for n in range(12)))

        await receiver.wait_for("/fast", 12)
        fast_done = time.monotonic() - started
        assert fast_done < 2.5, f"the fast endpoint took {fast_done:.1f} s"
        assert len(receiver.at("/slow")) <= 4  # two at a time, 1.5 s each
        await receiver.wait_for("/slow", 12, timeout_s=20)
