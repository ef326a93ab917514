"""Webhook deliveries through crashes, with the platform running as processes and a real HTTP receiver that checks
every signature with the `standardwebhooks` verifier: the webhooks sender killed with -9 mid-delivery, the Kafka
broker killed and restarted, PostgreSQL stopped in immediate mode, each while deliveries are pending. Every status
change reaches the endpoint (at least once, a repeat always under its first webhook-id), each order's in sequence.

The broker and the server of the outage tests are the tests' own (tests/e2e/test_outages.py's fixtures), so the
shared infrastructure is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaProducer

from devtools import infra
from devtools.platform import Infrastructure, Platform, running
from devtools.scenario import define_example
from devtools.upstream import Upstream
from devtools.webhook_receiver import Receiver, register, status_changes_in_order

from . import test_outages
from .test_outages import OUTAGE_S, OwnKafka, OwnPostgres, upstream_of
from .test_seed_scenario import until
from .test_several_instances import changes_expected

# The outage tests' own broker and server, as fixtures of this module too.
own_kafka = test_outages.own_kafka
own_postgres = test_outages.own_postgres

# A lease shorter than the default 30 s, so that a message claimed by a process that died (or whose claim a crashed
# database kept) is delivered again within seconds; the request's timeout stays below it.
FAST_LEASES = {"DELIVERY_LEASE_S": "3", "DELIVERY_TIMEOUT_S": "2"}
CHUNK = 40  # orders before the outage, and again after it: ~190 status changes each
RECEIVER_DELAY_S = 0.05  # each answer takes this long, so deliveries are still pending when the outage hits


def received_in_order(receiver: Receiver, numbers: range) -> bool:
    """Whether every status change of the orders `numbers` has reached the receiver."""
    per_order = status_changes_in_order(receiver.deliveries())
    return all(len(per_order.get(order, [])) == count for order, count in changes_expected(numbers).items())


def assert_every_change_in_sequence(receiver: Receiver, numbers: range) -> None:
    per_order = status_changes_in_order(receiver.deliveries())
    expected = {order: list(range(1, count + 1)) for order, count in changes_expected(numbers).items()}
    assert per_order == expected, {o: s for o, s in per_order.items() if s != expected.get(o)}


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


@asynccontextmanager
async def platform_on(infrastructure: Infrastructure, workdir: Path) -> AsyncIterator[Platform]:
    """The platform on an own broker or server (fast leases); its topics on a shared broker deleted after."""
    async with running(infrastructure, workdir, extra_env=FAST_LEASES) as platform:
        try:
            yield platform
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(infra.delete_topics(infrastructure.kafka_bootstrap, platform.prefix), 20)


async def deliveries_through_an_outage(
    platform: Platform, go_down: Callable[[], object], come_back: Callable[[], object]
) -> Receiver:
    """Orders flow and their changes are being delivered (slowly) when the outage hits; more orders after it."""
    receiver = Receiver(delay_s=RECEIVER_DELAY_S)
    try:
        await define_example(platform, "demo")
        await register(platform, "demo", receiver)
        async with upstream_of(platform) as upstream:
            await upstream.publish(range(CHUNK))
            await until(lambda: len(receiver.requests()) >= 10, "deliveries under way", timeout_s=60)
            await _call(go_down)
            await asyncio.sleep(OUTAGE_S)
            await _call(come_back)
            await upstream.publish(range(CHUNK, 2 * CHUNK))
        await until(lambda: received_in_order(receiver, range(2 * CHUNK)), "every change delivered", timeout_s=120)
        return receiver
    finally:
        receiver.close()


async def _call(action: Callable[[], object]) -> None:
    result = action()
    if asyncio.iscoroutine(result):
        await result


async def test_the_broker_killed_and_restarted_while_deliveries_are_pending_loses_none_and_keeps_order(
    own_kafka: OwnKafka, infrastructure: Infrastructure, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    own = Infrastructure(own_kafka.bootstrap, infrastructure.postgres_dsn, "own broker, shared PostgreSQL")
    async with platform_on(own, tmp_path) as platform:
        receiver = await deliveries_through_an_outage(platform, own_kafka.kill, own_kafka.start)
    assert_every_change_in_sequence(receiver, range(2 * CHUNK))
    summary(f"webhooks through a broker kill -9: {len(receiver.requests())} requests, every change once or more, "
            "each order's in sequence")  # fmt: skip


async def test_postgresql_crashed_while_deliveries_are_pending_loses_none_and_keeps_order(
    own_postgres: OwnPostgres, infrastructure: Infrastructure, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    own = Infrastructure(infrastructure.kafka_bootstrap, own_postgres.dsn, "shared broker, own PostgreSQL")
    async with platform_on(own, tmp_path) as platform:
        receiver = await deliveries_through_an_outage(platform, own_postgres.crash, own_postgres.start)
    assert_every_change_in_sequence(receiver, range(2 * CHUNK))
    summary(f"webhooks through PostgreSQL stop -m immediate: {len(receiver.requests())} requests, every change "
            "once or more, each order's in sequence")  # fmt: skip
