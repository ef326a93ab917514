"""A webhook delivery through a crash of its sender, with the platform running as processes and a real HTTP
receiver that checks every signature with the `standardwebhooks` verifier: the webhooks process killed with -9
mid-delivery delivers again after its restart, under the same webhook-id, each order's changes in sequence.

The Kafka broker killed and PostgreSQL stopped in immediate mode while deliveries are pending are in
tests/e2e/test_outages.py, whose outages every SMS and every webhook go through together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from devtools.platform import Infrastructure, Platform, running
from devtools.scenario import define_example
from devtools.upstream import Upstream
from devtools.webhook_receiver import Receiver, register, status_changes_in_order

from .test_outages import FAST_LEASES
from .test_seed_scenario import until


async def test_the_sender_killed_mid_delivery_delivers_after_its_restart_under_the_same_webhook_id(
    infrastructure: Infrastructure, tmp_path: Path, producer: AIOKafkaProducer, summary: Callable[[str], None]
) -> None:
    with Receiver(delay_s=1.5) as receiver:
        async with running(infrastructure, tmp_path, extra_env=FAST_LEASES) as platform:
            await define_example(platform, "demo")
            await register(platform, "demo", receiver)
            await Upstream(producer, platform, "demo").order("o-1", "Анна", "invoice_issued")  # 3 status changes
            await until_or_say(platform, receiver, lambda: len(receiver.requests()) > 0, "the first delivery in flight")
            in_flight = receiver.requests()[0].headers["webhook-id"]
            platform.kill("webhooks")  # the receiver is still holding that request: no answer ever reaches it
            killed_at = receiver.requests()[-1].received_at
            receiver.delay_s = 0.0
            platform.start("webhooks")
            await platform.wait_ready("webhooks")
            await until_or_say(platform, receiver, lambda: receiver.distinct() >= 3, "the order's 3 changes")

    again = [d.webhook_id for d in receiver.deliveries() if d.received_at > killed_at]
    assert in_flight in again, "the delivery in flight at the kill was not made again under its webhook-id"
    assert status_changes_in_order(receiver.deliveries()) == {"o-1": [1, 2, 3]}
    summary(f"webhooks kill -9 mid-delivery: {in_flight} delivered again after the restart, o-1's 3 changes in order")


async def until_or_say(platform: Platform, receiver: Receiver, condition: Callable[[], bool], what: str) -> None:
    """`until`, and on a timeout what the receiver got and the webhooks process's last words."""
    try:
        await until(condition, what, timeout_s=90)
    except AssertionError as timeout:
        got = [(r.headers.get("webhook-id"), round(r.received_at, 1), r.status) for r in receiver.requests()]
        raise AssertionError(f"{timeout}; the receiver got {got}\n{platform.log_tail('webhooks')}") from timeout
