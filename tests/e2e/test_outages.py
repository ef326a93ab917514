"""The Kafka broker killed with -9, PostgreSQL stopped in immediate mode, while orders flow: every SMS once, and
every status change delivered to a partner's webhook endpoint (a real receiver checking each signature with the
`standardwebhooks` verifier; deliveries pending when the outage hits), each order's in sequence, a repeat always
under its first webhook-id.

Each test starts its OWN broker or server on free ports, with its data under tmp_path (devtools.infra's code,
the Kafka jars of the main state folder): the shared infrastructure the other tests run on is never touched.
The time to recover, from the restart to the first new SMS and to the last, goes to the run's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from devtools import infra
from devtools.platform import SERVICES, Infrastructure, Platform, free_port
from devtools.scenario import define_example
from devtools.upstream import Upstream
from devtools.webhook_receiver import Receiver, register, status_changes_in_order

from .test_crash_safety import publish
from .test_seed_scenario import until
from .test_several_instances import changes_expected

CHUNK = 150  # orders published before the outage, and again after it: 2/3 of them paid, so ~200 SMS
OUTAGE_S = 3.0  # how long the broker or the server stays down
# A webhook lease shorter than the default 30 s, so that a message claimed by a process that died (or whose claim a
# crashed database kept) is delivered again within seconds; the request's timeout stays below it.
FAST_LEASES = {"DELIVERY_LEASE_S": "3", "DELIVERY_TIMEOUT_S": "2"}
RECEIVER_DELAY_S = 0.01  # each answer takes this long, so deliveries are still pending when the outage hits


def private_settings(tmp_path: Path) -> infra.InfraSettings:
    """A second Kafka/PostgreSQL: free ports, data under tmp_path, the jars the main state folder resolved."""
    return infra.InfraSettings(
        state_dir=tmp_path / "infra",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="-Xms64m -Xmx256m",
        kafka_jars_dir=infra.kafka_paths(infra.InfraSettings()).jars,
        postgres_port=free_port(),
        infra_mode="local",
    )


class OwnKafka:
    def __init__(self, settings: infra.InfraSettings) -> None:
        self.settings = settings
        self.bootstrap = infra.local_bootstrap(settings)
        self.pid: int | None = None

    async def start(self) -> None:
        self.pid = await asyncio.to_thread(infra.start_kafka, self.settings)
        await infra.wait_for_broker(self.settings, self.pid)

    def kill(self) -> None:
        """SIGKILL the broker's process group: no controlled shutdown, no flush, like a crash."""
        assert self.pid is not None
        assert infra.signal_group_and_wait(self.pid, signal.SIGKILL, 10), "the broker survived SIGKILL"
        self.pid = None


class OwnPostgres:
    def __init__(self, settings: infra.InfraSettings) -> None:
        self.settings = settings
        self.dsn = infra.postgres_dsn(settings)

    async def start(self) -> None:
        await asyncio.to_thread(infra.start_postgres, self.settings)

    async def crash(self) -> None:
        """pg_ctl stop -m immediate: every backend quits at once, no checkpoint; the next start replays WAL."""
        await asyncio.to_thread(infra.stop_postgres, self.settings, "immediate")

    def remove(self) -> None:
        infra.stop_postgres(self.settings, "immediate")
        data_dir = infra.postgres_data_dir(self.settings, infra.existing_postgres_os_user())
        if data_dir.parent.parent == infra.PG_FALLBACK_ROOT:  # the server user could not enter tmp_path
            shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
async def own_kafka(tmp_path: Path) -> AsyncIterator[OwnKafka]:
    kafka = OwnKafka(private_settings(tmp_path))
    try:
        await kafka.start()
        await infra.ensure_topics(kafka.bootstrap)
        yield kafka
    finally:
        if kafka.pid is not None:
            kafka.kill()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    postgres = OwnPostgres(private_settings(tmp_path))
    try:
        infra.start_postgres(postgres.settings)
        yield postgres
    finally:
        postgres.remove()


@asynccontextmanager
async def running_platform(infrastructure: Infrastructure, workdir: Path) -> AsyncIterator[Platform]:
    platform = Platform(infrastructure, workdir, extra_env=FAST_LEASES, preloaded=True)
    await platform.create()
    try:
        for service in SERVICES:
            platform.start(service)
        await platform.wait_ready()
        yield platform
    finally:
        platform.stop_all()
        # The shared half (databases or topics) must not pile up; the own half goes with its process.
        with contextlib.suppress(Exception):
            await platform.drop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(infra.delete_topics(infrastructure.kafka_bootstrap, platform.prefix), 20)


class PipelinedUpstream(Upstream):
    """Queues each record without waiting for its acknowledgement (per-partition order is kept); `flush` waits."""

    def __init__(self, producer: AIOKafkaProducer, platform: Platform, partner: str) -> None:
        super().__init__(producer, platform, partner)
        self.pending: list[asyncio.Future[Any]] = []

    async def send(self, data: Any, event_id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/shop", partner_id=self.partner, event_id=event_id)
        self.pending.append(await self.producer.send(self.topic, envelope.to_bytes(), key=envelope.key()))
        return envelope

    async def publish(self, numbers: range) -> set[str]:
        expected = await publish(self, numbers)
        await asyncio.gather(*self.pending)
        self.pending.clear()
        return expected


@asynccontextmanager
async def upstream_of(platform: Platform) -> AsyncIterator[PipelinedUpstream]:
    producer = AIOKafkaProducer(bootstrap_servers=platform.infrastructure.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        yield PipelinedUpstream(producer, platform, "demo")
    finally:
        await producer.stop()


@dataclass
class Recovery:
    expected: set[str]  # the orders that must get an SMS
    sent_when_down: int  # SMS sent when the outage began (of the first chunk's)
    back_s: float  # from the outage's start until the broker or server answered again
    first_s: float  # from then to the first SMS sent after it
    all_s: float  # and to the last expected SMS

    def describe(self) -> str:
        return (
            f"{len(self.expected)} SMS expected, each sent once; down when {self.sent_when_down} had gone out, "
            f"back after {self.back_s:.1f} s; from then the first new SMS after {self.first_s:.1f} s, "
            f"all after {self.all_s:.1f} s"
        )


async def through_an_outage(
    platform: Platform,
    upstream: PipelinedUpstream,
    receiver: Receiver,
    go_down: Callable[[], object],
    come_back: Callable[[], object],
) -> Recovery:
    """Orders flow, the outage hits while their SMS and webhooks are worked on, more orders after the restart."""
    await define_example(platform, "demo")
    await register(platform, "demo", receiver)
    expected = await upstream.publish(range(CHUNK))
    await until(lambda: platform.sent_count() > 0, "the first SMS before the outage", timeout_s=60)
    await until(lambda: len(receiver.requests()) >= 10, "webhook deliveries under way", timeout_s=60)
    down, sent_when_down = time.monotonic(), platform.sent_count()
    await _call(go_down)
    await asyncio.sleep(OUTAGE_S)
    await _call(come_back)
    restarted, sent_at_restart = time.monotonic(), platform.sent_count()
    expected |= await upstream.publish(range(CHUNK, 2 * CHUNK))
    await until(lambda: platform.sent_count() > sent_at_restart, "an SMS after the restart", timeout_s=90)
    first_s = time.monotonic() - restarted
    await until(lambda: platform.sent_count() >= len(expected), f"{len(expected)} SMS", timeout_s=120)
    all_s = time.monotonic() - restarted
    await until(lambda: received_in_order(receiver, range(2 * CHUNK)), "every change delivered", timeout_s=120)
    await asyncio.sleep(3)  # late duplicates would show up now
    return Recovery(expected, sent_when_down, restarted - down, first_s, all_s)


def received_in_order(receiver: Receiver, numbers: range) -> bool:
    """Whether every status change of the orders `numbers` has reached the receiver."""
    per_order = status_changes_in_order(receiver.deliveries())
    return all(len(per_order.get(order, [])) == count for order, count in changes_expected(numbers).items())


def assert_every_change_in_sequence(receiver: Receiver, numbers: range) -> None:
    per_order = status_changes_in_order(receiver.deliveries())
    expected = {order: list(range(1, count + 1)) for order, count in changes_expected(numbers).items()}
    assert per_order == expected, {o: s for o, s in per_order.items() if s != expected.get(o)}


async def _call(action: Callable[[], object]) -> None:
    result = action()
    if asyncio.iscoroutine(result):
        await result


def assert_exactly_once(platform: Platform, expected: set[str]) -> None:
    sent = platform.sent_sms()
    per_command = Counter(sms["id"] for sms in sent)
    assert [cid for cid, n in per_command.items() if n > 1] == [], "an SMS went out twice"
    orders = sorted(sms["text"].split("order ")[1].split(" ")[0] for sms in sent)
    assert orders == sorted(expected), set(expected) ^ set(orders)


async def test_the_kafka_broker_killed_and_restarted_mid_stream_loses_and_duplicates_no_sms(
    own_kafka: OwnKafka, infrastructure: Infrastructure, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    own = Infrastructure(own_kafka.bootstrap, infrastructure.postgres_dsn, "own broker, shared PostgreSQL")
    with Receiver(delay_s=RECEIVER_DELAY_S) as receiver:
        async with running_platform(own, tmp_path) as platform, upstream_of(platform) as upstream:
            recovery = await through_an_outage(platform, upstream, receiver, own_kafka.kill, own_kafka.start)
            assert_exactly_once(platform, recovery.expected)
        assert_every_change_in_sequence(receiver, range(2 * CHUNK))
    summary(f"Kafka broker kill -9 mid-stream: {recovery.describe()}; {len(receiver.requests())} webhook requests")


async def test_postgresql_stopped_in_immediate_mode_mid_stream_loses_and_duplicates_no_sms(
    own_postgres: OwnPostgres, infrastructure: Infrastructure, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    own = Infrastructure(infrastructure.kafka_bootstrap, own_postgres.dsn, "shared broker, own PostgreSQL")
    with Receiver(delay_s=RECEIVER_DELAY_S) as receiver:
        async with running_platform(own, tmp_path) as platform, upstream_of(platform) as upstream:
            recovery = await through_an_outage(platform, upstream, receiver, own_postgres.crash, own_postgres.start)
            assert_exactly_once(platform, recovery.expected)
        assert_every_change_in_sequence(receiver, range(2 * CHUNK))
    summary(f"PostgreSQL stop -m immediate mid-stream: {recovery.describe()}; {len(receiver.requests())} webhook "
            "requests")  # fmt: skip
