"""`make bench`: end-to-end throughput, latency, CPU and memory, against baselines measured in the same run.

This machine is shared and noisy, so the numbers that matter are ratios taken within one run: the
platform against the floor (the same three hops with the same guarantees and nothing else on top,
devtools.floor_pipeline) and against a raw aiokafka relay over the same four topics, the platform with
many campaigns and a large orders database against itself without, and the registry's lookup endpoint
against a bare FastAPI endpoint, and each REST write of orders and the campaign preview against the registry's
status POST; `targets` in the report holds issue 19's table and issue 29's REST write rows. The JSON report goes
to bench/results/; docs/performance.md explains the method. Benchmarks never fail: they measure.
`BENCH_ONLY=cost` runs issue 34's phases alone (a few minutes): the platform and the floor at each fixed rate and at
rest, with their cost per upstream event (devtools.bench_cost); `BENCH_ONLY=full_speed` the platform's full-speed
rounds and the floor's, with what each cost (a few minutes). `BENCH_ONLY=rest_writes` (or `tokens`: the registry
lookups with an identity token, the token endpoint, the peak RSS;
or `webhooks`: deliveries per second and their latency beside the SMS path's, with and without a dead endpoint's
backlog, devtools.bench_webhooks) starts the services and runs that phase alone (seconds, not minutes).

Beside this module: what each phase cost (CPU, memory, batch sizes) is measured by devtools.bench_accounting, the
printed summary and the targets are devtools.bench_report's, the raw relay and bare endpoint run as
devtools.bench_baselines processes, and the floor as devtools.floor_pipeline processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from campaigns import repository as campaigns_repository
from campaigns.listener import NOTIFY_CHANNEL
from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported, OrderUpserted
from contracts.orders import Customer
from contracts.statuses import StatusCodes
from contracts.topics import Topic, prefixed
from devtools import infra
from devtools.bench_accounting import (
    batch_means,
    cpu_seconds,
    cpu_used,
    infrastructure_cpu,
    pipeline_counts,
    process_usage,
    service_processes,
)
from devtools.bench_backtest import backtest_phase, backtest_rows, backtest_table
from devtools.bench_cost import PG_STATS_LAG_S, CostMeter, Pipeline, broker_alone
from devtools.bench_journeys import journeys_alone, journeys_phase, journeys_rows, journeys_table
from devtools.bench_report import (
    cost_rows,
    cost_table,
    full_speed_rows,
    full_speed_table,
    rest_write_rows,
    rest_writes_table,
    table,
    target_rows,
    targets,
    token_rows,
    tokens_table,
    webhook_rows,
    webhooks_table,
)
from devtools.bench_webhooks import webhooks_phase
from devtools.calibration import machine_costs
from devtools.platform import SERVICES, Infrastructure, Platform, database_dsn, free_port
from devtools.scenario import example_status_list
from notifier import repository as notifier_repository
from orders import repository as orders_repository
from servicekit.kafka import topic_partitions
from servicekit.ops import read_topic

ROOT = Path(__file__).resolve().parents[4]
PARTNERS = ("bench-a", "bench-b", "bench-c")
FULL_SPEED_ORDERS = int(os.environ.get("BENCH_ORDERS", "1500"))
RATES = tuple(int(r) for r in os.environ.get("BENCH_RATES", "100,500,1000").split(","))
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "8"))
# At a fixed rate the load generator wakes up at most every tick and publishes what is due (at 500 events/s,
# five events every 10 ms, in one produce request): a wake-up and a produce request per event made the harness
# and its broker requests a quarter of the machine it measures. 0: one wake-up per event.
PUBLISH_TICK_S = float(os.environ.get("BENCH_PUBLISH_TICK_MS", "10")) / 1000
# Cost versus size: active campaigns preloaded per bench partner (none matching the traffic), and orders with
# their history preloaded into the orders database, before the full-speed and 100 ev/s phases are rerun.
PRELOAD_CAMPAIGNS = int(os.environ.get("BENCH_CAMPAIGNS", "1000"))
PRELOAD_ORDERS = int(os.environ.get("BENCH_PRELOAD_ORDERS", "1000000"))
WARMUP_ORDERS = int(os.environ.get("BENCH_WARMUP_ORDERS", "300"))
# A full-speed phase lasts one to four seconds, so one stall of the machine moves it a lot: each is run this many
# times (the platform's, the floor's, and at each preloaded size) and its median round is the figure.
FULL_SPEED_ROUNDS = max(1, int(os.environ.get("BENCH_FULL_SPEED_ROUNDS", "3")))
# `make bench INSTANCES=2`: that many processes of each of orders, campaigns and the notifier, in the same consumer
# groups (the registry stays one: nothing on the pipeline's path calls it).
INSTANCES = max(1, int(os.environ.get("INSTANCES") or 1))
SCALED_SERVICES = ("orders", "campaigns", "notifier")
FLOOR_HOPS = ("orders", "campaigns", "notifier")  # devtools.floor_pipeline's
# BENCH_PROFILE=1: py-spy samples every service in every phase (folded stacks beside the report).
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
CHANGES_PER_ORDER, SMS_PER_ORDER, EVENTS_PER_ORDER = 6, 2, 4
# REST writes (issue 29): each kind sequentially on the idle platform (after a few unmeasured requests), then at
# a fixed rate for a few seconds, one kind after the other, on a partner of their own.
REST_PARTNER = "bench-rest"
REST_WARMUP_REQUESTS = 5
REST_IDLE_REQUESTS = int(os.environ.get("BENCH_REST_IDLE_REQUESTS", "20"))
REST_RATE = float(os.environ.get("BENCH_REST_RATE", "50"))
REST_SECONDS = float(os.environ.get("BENCH_REST_SECONDS", "3"))
REST_BASELINE = "registry POST /v1/statuses"
REST_CUSTOMER = {"id": "cust-rest", "phone": "+79161234567", "name": "Анна", "sms_consent": True}
REST_ORDER = {
    "customer": REST_CUSTOMER, "amount": "1490.00", "currency": "RUB", "placed_at": "2026-01-01T09:00:00Z",
    "statuses": {"general": "accepted", "delivery": "at_pickup_point", "payment": "invoice_issued"},
}  # fmt: skip
REST_PREVIEW = {  # the campaign editor's live preview of the product's example, as it asks while one types
    "definition": {
        "name": "Shipped and paid",
        "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
        "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
        "template": "Hi",
    },
    "to": "shipped",
    "order": {"amount": "1490.00", "currency": "RUB", "customer": REST_CUSTOMER, "statuses": {"payment": "paid"}},
}
# The token endpoint (issue 30): this many clients asking at once, each as soon as its last answer came.
TOKEN_WORKERS = int(os.environ.get("BENCH_TOKEN_WORKERS", "8"))
TOKEN_SECONDS = float(os.environ.get("BENCH_TOKEN_SECONDS", "5"))
# `BENCH_ONLY=<phase>`: the services started as for the whole bench, and that phase alone.
ONLY = os.environ.get("BENCH_ONLY", "")
ALONE = ("rest_writes", "tokens", "webhooks", "backtest", "cost", "full_speed", "journeys")
# Issue 34's rest phase: no traffic for this long, once the pipeline has settled after the fixed rates; and the
# broker with none of the bench's clients, measured before anything starts, for the rest phase's Kafka CPU.
REST_PHASE_SECONDS = float(os.environ.get("BENCH_REST_PHASE_SECONDS", "60"))
REST_SETTLE_SECONDS = float(os.environ.get("BENCH_REST_SETTLE_SECONDS", "15"))
BROKER_ALONE_SECONDS = float(os.environ.get("BENCH_BROKER_ALONE_SECONDS", "30"))
# `BENCH_ONLY=cost` with `BENCH_COST_AFTER_FULL_SPEED=1`: the full-speed rounds first, as in the whole bench, whose
# fixed rates run on the tables those rounds grew tenfold (and on plans PostgreSQL cached while they were small).
COST_AFTER_FULL_SPEED = os.environ.get("BENCH_COST_AFTER_FULL_SPEED", "") not in ("", "0")
# The bench's own PostgreSQL server (since issue 34; BENCH_OWN_POSTGRES=0: the shared one `make infra-up` starts):
# the shared server also serves every other session's tests, so its processes' CPU and its WAL were theirs as much
# as the bench's, and it may have been started without pg_stat_statements. Started with the same options (and
# pg_stat_statements) at the start of a run, stopped at its end.
OWN_POSTGRES = os.environ.get("BENCH_OWN_POSTGRES", "1") not in ("", "0")
OWN_POSTGRES_PORT = int(os.environ.get("BENCH_POSTGRES_PORT", "54330"))
# The notifier's provider and its in-flight limit out of the way, so the SMS path measures the platform's work.
FAST_PROVIDER = {"PROVIDER_RATE_PER_S": "100000", "MAX_IN_FLIGHT": "256"}
CAMPAIGNS = (
    {  # the product's example: about one change in six
        "name": "Shipped and paid",
        "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
        "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
        "template": "{{ customer.name }}, заказ {{ order.id }} отгружен",
        "quiet_hours": "deliver_immediately",
    },
    {  # a second one, so that about a third of the changes trigger an SMS
        "name": "In progress",
        "trigger": {"status_type": "general", "from": "any", "to": "in_progress"},
        "template": "{{ customer.name }}, заказ {{ order.id }} в работе",
        "reentry": "every_time",
        "quiet_hours": "deliver_immediately",
    },
)

# $1 orders spread over the partners $2, each delivered and paid with its whole history, as orders stores them;
# placed over the last 29 days, a change a minute (what the backtest phase replays).
PRELOAD_ORDERS_SQL = """
WITH o AS (
    INSERT INTO orders (partner_id, order_id, customer_id, customer_phone, customer_name, sms_consent, amount,
                        currency, placed_at, last_sequence, details_occurred_at, details_source_sequence)
    SELECT ($2::text[])[1 + n % cardinality($2::text[])], 'pre-' || n, 'cust-' || n % 500,
           '+7916' || lpad((n % 10000000)::text, 7, '0'), 'Анна', true, 1490.00, 'RUB',
           now() - interval '29 days' + n * interval '29 days' / $1, 6, now() - interval '30 days', 1
    FROM generate_series(1, $1::int) AS n RETURNING partner_id, order_id, placed_at
), s AS (
    INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, source_sequence, recorded_at,
                                entered_at)
    SELECT partner_id, order_id, t.type, t.code, t.code, placed_at, t.seq, placed_at, placed_at
    FROM o, (VALUES ('general', 'completed', 4), ('delivery', 'delivered', 5), ('payment', 'paid', 2))
            AS t(type, code, seq)
), h AS (
    INSERT INTO status_history (partner_id, order_id, type, outcome, from_code, from_name, to_code, to_name, sequence,
                                source_sequence, occurred_at, recorded_at, event_id, general_code, general_name,
                                delivery_code, delivery_name, payment_code, payment_name)
    SELECT partner_id, order_id, t.type, 'applied', t.from_code, t.from_code, t.to_code, t.to_code, t.seq, t.seq,
           placed_at + t.seq * interval '1 minute', placed_at + t.seq * interval '1 minute', gen_random_uuid()::text,
           t.general, t.general, t.delivery, t.delivery, t.payment, t.payment
    FROM o, (VALUES  -- each with the order's statuses its event carried (the first three: one upsert's)
        ('general', NULL, 'accepted', 1, 'accepted', 'at_pickup_point', 'invoice_issued'),
        ('delivery', NULL, 'at_pickup_point', 2, 'accepted', 'at_pickup_point', 'invoice_issued'),
        ('payment', NULL, 'invoice_issued', 3, 'accepted', 'at_pickup_point', 'invoice_issued'),
        ('payment', 'invoice_issued', 'paid', 4, 'accepted', 'at_pickup_point', 'paid'),
        ('general', 'accepted', 'completed', 5, 'completed', 'at_pickup_point', 'paid'),
        ('delivery', 'at_pickup_point', 'delivered', 6, 'completed', 'delivered', 'paid'))
        AS t(type, from_code, to_code, seq, general, delivery, payment)
)
INSERT INTO order_details_history (partner_id, order_id, outcome, fields, source_sequence, occurred_at, recorded_at,
                                   event_id)
SELECT partner_id, order_id, 'created', '{}', 1, placed_at, placed_at, gen_random_uuid()::text FROM o
"""
# The same $1 orders' evaluations in campaigns: the bench's two campaigns (names $3) fired for each, 40 days ago
# (outside any frequency-cap window, inside the fired evaluations' retention), for customers of their own.
PRELOAD_EVALUATIONS_SQL = """
INSERT INTO evaluations (campaign_id, event_id, partner_id, order_id, customer_id, outcome, send_sms_id,
                         transactional, evaluated_at)
SELECT c.id, gen_random_uuid()::text, c.partner_id, 'pre-' || n, 'pre-cust-' || n % 500, 'fired',
       gen_random_uuid()::text, false, now() - interval '40 days'
FROM generate_series(1, $1::int) AS n
JOIN campaigns c ON c.partner_id = ($2::text[])[1 + n % cardinality($2::text[])] AND c.name = ANY($3::text[])
"""
# Copies of the stored campaign $1 (same partner and definition, new id and name, active), $2 of them, each
# announced on the channel $3 as the repository announces a write.
PRELOAD_CAMPAIGNS_SQL = """
WITH added AS (
    INSERT INTO campaigns (partner_id, id, name, state, definition, activated_at, created_at, updated_at)
    SELECT c.partner_id, gen_random_uuid()::text, 'Preloaded ' || n, 'active',
           jsonb_set(c.definition, '{name}', to_jsonb('Preloaded ' || n)), now(), now(), now()
    FROM campaigns c, generate_series(1, $2::int) AS n WHERE c.id = $1
    RETURNING id
)
SELECT count(pg_notify($3, id)) FROM added
"""
# The statements each hop runs per batch on its growing tables, by service database: their plans at the preloaded
# size go into the report (`explain_hot_queries`).
HOT_QUERIES: dict[str, dict[str, str]] = {
    "orders": {
        "load orders": orders_repository.LOCK_ORDERS,
        "load statuses and claims": orders_repository.LOAD_STATUSES_AND_CLAIMS,
        "save batch": orders_repository.SAVE_BATCH,
    },
    "campaigns": {
        "active campaigns (index load)": "SELECT * FROM campaigns WHERE state = 'active'",
        "evaluations seen": campaigns_repository.EVALUATED_SQL,
        "fired before": campaigns_repository.FIRED_FOR_ORDERS_SQL,
    },
    "notifier": {"intake": notifier_repository.INSERT_MESSAGES},
}


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def journey(partner: str, order_id: str, n: int, start: datetime) -> list[Envelope[Any]]:
    """A realistic order: created (3 statuses), paid, in progress, shipped: 6 changes, 2 SMS."""
    customer = Customer(id=f"cust-{n % 500}", phone=f"+7916{n % 10_000_000:07d}", name="Анна", sms_consent=True)
    upsert = OrderUpserted(
        order_id=order_id, customer=customer, amount="1490.00", currency="RUB", placed_at=start,
        statuses=StatusCodes(general="accepted", delivery="at_pickup_point", payment="invoice_issued"),
        source_sequence=1, occurred_at=start,
    )  # fmt: skip
    steps = [
        OrderStatusReported(order_id=order_id, code=code, occurred_at=start + timedelta(seconds=i), source_sequence=i)
        for i, code in enumerate(("paid", "in_progress", "shipped"), start=2)
    ]
    return [Envelope.wrap(data, source="/bench", partner_id=partner) for data in (upsert, *steps)]


def shipped(event: Envelope[Any]) -> tuple[str, str] | None:
    """(partner, order) when `event` reports the order shipped: the change whose SMS latency is measured."""
    if isinstance(event.data, OrderStatusReported) and event.data.code == "shipped":
        return event.partnerid, event.data.order_id
    return None


def interleaved(orders: int, tag: str) -> list[Envelope[Any]]:
    """Events of many orders interleaved as real traffic is, each order's events in order."""
    start = datetime.now(UTC)
    journeys = [journey(PARTNERS[n % len(PARTNERS)], f"{tag}-{n}", n, start) for n in range(orders)]
    return [events[step] for step in range(EVENTS_PER_ORDER) for events in journeys]


@contextlib.asynccontextmanager
async def end_totals(bootstrap: str, topic: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A function giving the number of records on `topic` (sum of end offsets), one client for all the polls:
    polling must not load the machine it measures."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()

    async def total() -> int:
        return sum((await consumer.end_offsets(partitions)).values())

    try:
        yield total
    finally:
        await consumer.stop()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Seconds until `condition` held (polled every 50 ms); raises TimeoutError."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Bench:
    infrastructure: Infrastructure
    workdir: Path
    report: dict[str, Any] = field(default_factory=dict)
    sms_expected: int = 0  # by the platform, over the whole run: the exactly-once check counts them at the end

    def topic(self, platform: Platform, topic: Topic) -> str:
        return prefixed(topic, platform.prefix)

    # --- set-up -------------------------------------------------------------------------------
    async def define(self, platform: Platform) -> None:
        for partner in PARTNERS:
            async with platform.client("status-registry", partner) as registry:
                (await registry.put("/v1/statuses", json={"statuses": example_status_list()})).raise_for_status()
            async with platform.client("campaigns", partner) as campaigns:
                for campaign in CAMPAIGNS:
                    for _ in range(100):
                        created = await campaigns.post("/v1/campaigns", json=campaign)
                        if created.status_code == 201:
                            break
                        await asyncio.sleep(0.1)
                    (await campaigns.post(f"/v1/campaigns/{created.json()['id']}/activate")).raise_for_status()

    # --- throughput ---------------------------------------------------------------------------
    async def full_speed(
        self,
        platform: Platform,
        producer: AIOKafkaProducer,
        orders: int = FULL_SPEED_ORDERS,
        tag: str = "full",
        rounds: int = FULL_SPEED_ROUNDS,
    ) -> dict[str, Any]:
        async with end_totals(
            self.infrastructure.kafka_bootstrap, self.topic(platform, Topic.ORDER_STATUS_CHANGED)
        ) as changes:
            return median_round(
                [await self._full_speed(platform, producer, changes, orders, f"{tag}{n}") for n in range(rounds)]
            )

    async def _full_speed(
        self,
        platform: Platform,
        producer: AIOKafkaProducer,
        changes: Callable[[], Awaitable[int]],
        orders: int,
        tag: str,
    ) -> dict[str, Any]:
        events = interleaved(orders, tag)
        changes_before = await changes()
        sms_before = platform.sent_count()
        expected_changes, expected_sms = orders * CHANGES_PER_ORDER, orders * SMS_PER_ORDER
        self.sms_expected += expected_sms
        inbound = self.topic(platform, Topic.ORDERS_INBOUND)
        records = [(event.to_bytes(), event.key()) for event in events]
        started = time.monotonic()
        for value, key in records:
            await producer.send(inbound, value, key=key)
        await producer.flush()
        published_s = time.monotonic() - started

        async def changes_done() -> bool:
            return await changes() - changes_before >= expected_changes

        async def sms_done() -> bool:
            return platform.sent_count() - sms_before >= expected_sms

        changes_s = published_s + await wait_for(changes_done, 600)
        sms_s = time.monotonic() - started + await wait_for(sms_done, 600)
        return {
            "orders": orders,
            "events": len(events),
            "status_changes": expected_changes,
            "sms": expected_sms,
            "publish_seconds": round(published_s, 2),
            "changes_seconds": round(changes_s, 2),
            "sms_seconds": round(sms_s, 2),
            "status_changes_per_second": round(expected_changes / changes_s, 1),
            "sms_per_second": round(expected_sms / sms_s, 1),
        }

    async def stages_alone(self, platform: Platform, producer: AIOKafkaProducer) -> dict[str, Any]:
        """Each stage with the machine to itself: orders while campaigns and the notifier are paused (SIGSTOP),
        then campaigns and the notifier working off what orders published while orders idles. Shows what a
        stage does when it does not share the two cores with the others, and its CPU per record."""
        orders = FULL_SPEED_ORDERS
        downstream = [
            platform.processes[instance].pid for s in ("campaigns", "notifier") for instance in platform.instances(s)
        ]
        records = [(event.to_bytes(), event.key()) for event in interleaved(orders, "alone")]
        self.sms_expected += orders * SMS_PER_ORDER
        sms_before = platform.sent_count()
        orders_cpu: dict[str, Any] = {}
        downstream_cpu: dict[str, Any] = {}
        async with end_totals(
            self.infrastructure.kafka_bootstrap, self.topic(platform, Topic.ORDER_STATUS_CHANGED)
        ) as changes:
            changes_before = await changes()
            _signal(downstream, signal.SIGSTOP)
            try:
                with cpu_used(platform, orders_cpu):
                    for value, key in records:
                        await producer.send(self.topic(platform, Topic.ORDERS_INBOUND), value, key=key)
                    await producer.flush()

                    async def changes_done() -> bool:
                        return await changes() - changes_before >= orders * CHANGES_PER_ORDER

                    await wait_for(changes_done, 600)
            finally:
                _signal(downstream, signal.SIGCONT)

        async def sms_done() -> bool:
            return platform.sent_count() - sms_before >= orders * SMS_PER_ORDER

        with cpu_used(platform, downstream_cpu):
            await wait_for(sms_done, 600)
        return {
            "orders": orders,
            "orders_alone": {
                "status_changes_per_second": round(orders * CHANGES_PER_ORDER / orders_cpu["wall_seconds"], 1),
                "cpu": orders_cpu,
            },
            "campaigns_and_notifier_alone": {
                "sms_per_second": round(orders * SMS_PER_ORDER / downstream_cpu["wall_seconds"], 1),
                "cpu": downstream_cpu,
            },
        }

    async def baseline(self, producer: AIOKafkaProducer, records: int, sizes: dict[Topic, int]) -> dict[str, Any]:
        prefix = f"raw{os.getpid()}."
        await infra.ensure_topics(self.infrastructure.kafka_bootstrap, prefix)
        hops = [Topic.ORDERS_INBOUND, Topic.ORDER_STATUS_CHANGED, Topic.SEND_SMS, Topic.SMS_EVENTS]
        names = [prefixed(t, prefix) for t in hops]
        relays = [
            baseline_process("relay", self.infrastructure.kafka_bootstrap, a, b, str(sizes.get(hop, 0)))
            for (a, b), hop in zip(itertools.pairwise(names), hops[1:], strict=True)
        ]
        try:
            await asyncio.sleep(3)  # the relays join their groups
            orders = max(1, records // EVENTS_PER_ORDER)
            async with end_totals(self.infrastructure.kafka_bootstrap, names[-1]) as relayed:
                # A round lasts about a second, so one stall of the machine moves it a lot: the median of
                # several is the baseline.
                rounds = [await self._relay_round(producer, names[0], relayed, orders, f"raw{n}") for n in range(3)]
            return {
                "records": orders * EVENTS_PER_ORDER,
                "rounds_records_per_second": rounds,
                "records_per_second": statistics.median(rounds),
            }
        finally:
            for relay in relays:
                relay.terminate()
            await infra.delete_topics(self.infrastructure.kafka_bootstrap, prefix)

    @staticmethod
    async def _relay_round(
        producer: AIOKafkaProducer, first_topic: str, relayed: Callable[[], Awaitable[int]], orders: int, tag: str
    ) -> float:
        """Records per second through the raw relay chain, from the first send to the last record out."""
        payload = [(e.to_bytes(), e.key()) for e in interleaved(orders, tag)]
        before = await relayed()
        started = time.monotonic()
        for value, key in payload:
            await producer.send(first_topic, value, key=key)
        await producer.flush()

        async def through() -> bool:
            return await relayed() - before >= len(payload)

        elapsed = time.monotonic() - started + await wait_for(through, 300)
        return round(len(payload) / elapsed, 1)

    async def record_sizes(self, platform: Platform) -> dict[Topic, int]:
        """The platform's mean record value size per topic (read back after the warm-up): the baselines pad theirs
        to it, so the broker moves as many bytes for them."""
        sizes = {}
        for topic in (Topic.ORDER_STATUS_CHANGED, Topic.SEND_SMS, Topic.SMS_EVENTS):
            values = [
                len(r.value or b"")
                for r in await read_topic(
                    self.infrastructure.kafka_bootstrap, self.topic(platform, topic), timeout_s=30
                )
            ]
            sizes[topic] = round(statistics.mean(values)) if values else 0
        return sizes

    # --- the floor ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def floor(self, sizes: dict[Topic, int]) -> AsyncIterator[tuple[str, dict[str, int]]]:
        """The floor pipeline (devtools.floor_pipeline) running as three processes under its own topic prefix and
        databases; yields the prefix and each hop's process id."""
        prefix = f"floor{os.getpid()}."
        bootstrap = self.infrastructure.kafka_bootstrap
        await infra.ensure_topics(bootstrap, prefix)
        databases = floor_databases()
        admin = await asyncpg.connect(self.infrastructure.postgres_dsn)
        try:
            for database in databases:
                await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        named_sizes = json.dumps({prefixed(topic, prefix): size for topic, size in sizes.items()})
        processes = [
            subprocess.Popen(  # noqa: ASYNC220 - once per run, before anything is measured
                [sys.executable, "-m", "devtools.floor_pipeline", hop, bootstrap,
                 database_dsn(self.infrastructure.postgres_dsn, database), prefix, named_sizes]
            )
            for hop, database in zip(FLOOR_HOPS, databases, strict=True)
        ]  # fmt: skip
        try:
            await asyncio.sleep(3)  # the hops join their groups
            yield prefix, {hop: process.pid for hop, process in zip(FLOOR_HOPS, processes, strict=True)}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=15)
            await infra.delete_topics(bootstrap, prefix)
            admin = await asyncpg.connect(self.infrastructure.postgres_dsn)
            try:
                for database in databases:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()

    async def floor_phases(
        self, producer: AIOKafkaProducer, sizes: dict[Topic, int], full_speed: bool = True, rates: bool = True
    ) -> dict[str, Any]:
        """The floor at full speed (after a warm-up; not with `full_speed=False`), at the latency phases' fixed
        rates and at rest, with the cost of each of the last two (issue 34; not with `rates=False`)."""
        async with self.floor(sizes) as (prefix, pids):
            meter = CostMeter(
                self.infrastructure.postgres_dsn,
                kafka_port(self.infrastructure.kafka_bootstrap),
                Pipeline(
                    {f"floor {hop}": pid for hop, pid in pids.items()},
                    dict(zip(floor_databases(), FLOOR_HOPS, strict=True)),
                ),
            )
            bootstrap = self.infrastructure.kafka_bootstrap
            result: dict[str, Any] = {}
            async with (
                end_totals(bootstrap, prefixed(Topic.ORDER_STATUS_CHANGED, prefix)) as changes,
                end_totals(bootstrap, prefixed(Topic.SMS_EVENTS, prefix)) as dispatched,
            ):
                await self._floor_full_speed(prefix, producer, changes, dispatched, WARMUP_ORDERS, "floorwarm")
                if full_speed:
                    before = _floor_cpu(pids)
                    rounds = [
                        await self._floor_full_speed(
                            prefix, producer, changes, dispatched, FULL_SPEED_ORDERS, f"floor{n}"
                        )
                        for n in range(FULL_SPEED_ROUNDS)
                    ]
                    result["full_speed"] = median_round(rounds)
                    # What the same work cost the floor, to set beside the platform's full-speed CPU (all rounds).
                    result["full_speed"]["cpu_seconds"] = {
                        name: round(seconds - before[name], 2) for name, seconds in _floor_cpu(pids).items()
                    }
                if not rates:
                    return result
                result["latency"] = []
                for rate in RATES:
                    cost: dict[str, Any] = {}
                    async with meter.phase(rate_events(rate), cost):
                        row = await self.latency_of(prefix, dispatched, producer, rate, f"floorrate{rate}")
                    result["latency"].append(row | {"cost": cost})
            result["rest"] = await rest_phase(meter, "floor")
        return result

    @staticmethod
    async def _floor_full_speed(
        prefix: str,
        producer: AIOKafkaProducer,
        changes: Callable[[], Awaitable[int]],
        dispatched: Callable[[], Awaitable[int]],
        orders: int,
        tag: str,
    ) -> dict[str, Any]:
        records = [(e.to_bytes(), e.key()) for e in interleaved(orders, tag)]
        changes_before, dispatched_before = await changes(), await dispatched()
        started = time.monotonic()
        for value, key in records:
            await producer.send(prefixed(Topic.ORDERS_INBOUND, prefix), value, key=key)
        await producer.flush()

        async def changes_done() -> bool:
            return await changes() - changes_before >= orders * CHANGES_PER_ORDER

        async def sms_done() -> bool:
            return await dispatched() - dispatched_before >= orders * SMS_PER_ORDER

        changes_s = time.monotonic() - started + await wait_for(changes_done, 600)
        sms_s = time.monotonic() - started + await wait_for(sms_done, 600)
        return {
            "orders": orders,
            "changes_seconds": round(changes_s, 2),
            "sms_seconds": round(sms_s, 2),
            "status_changes_per_second": round(orders * CHANGES_PER_ORDER / changes_s, 1),
            "sms_per_second": round(orders * SMS_PER_ORDER / sms_s, 1),
        }

    # --- cost versus size ---------------------------------------------------------------------
    async def preload_campaigns(self, platform: Platform, count: int) -> None:
        """`count` more active campaigns for every bench partner, none matching the bench's traffic. The first is
        created and activated through the campaigns API; the others are bulk copies of its stored row (as the
        repository wrote it, under new ids and names), announced on the service's NOTIFY channel in the same
        transaction, as the repository announces a write, so the running service loads each into its index.
        Through the API alone, 3,000 campaigns took minutes."""
        campaign = {
            "name": "Preloaded 0",
            "trigger": {"status_type": "delivery", "from": "any", "to": "delivered"},
            "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
            "template": "{{ customer.name }}, у нас для вас предложение",
            "quiet_hours": "deliver_immediately",
        }
        async with self.database(platform, "campaigns") as conn:
            for partner in PARTNERS:
                async with platform.client("campaigns", partner) as campaigns:
                    created = await campaigns.post("/v1/campaigns", json=campaign)
                    created.raise_for_status()
                    first = created.json()["id"]
                    (await campaigns.post(f"/v1/campaigns/{first}/activate")).raise_for_status()
                if count > 1:
                    async with conn.transaction():
                        await conn.execute(PRELOAD_CAMPAIGNS_SQL, first, count - 1, NOTIFY_CHANNEL)
        # The service loads each announced campaign by id: a few thousand single-row reads.
        await asyncio.sleep(5)

    async def preload_orders(self, platform: Platform, count: int) -> None:
        """`count` delivered orders with their whole history (3 current statuses, 6 history rows, a details
        row each) in the orders database, spread over the bench partners, as the service would have stored
        them, and in the campaigns database the fired evaluations of the bench's two campaigns for each (what
        campaigns' per-batch probes read); then ANALYZE, as autovacuum would after such a load."""
        partners = list(PARTNERS)
        for service, sql, arguments in (
            ("orders", PRELOAD_ORDERS_SQL, (count, partners)),
            ("campaigns", PRELOAD_EVALUATIONS_SQL, (count, partners, [c["name"] for c in CAMPAIGNS])),
        ):
            async with self.database(platform, service) as conn:
                async with conn.transaction():
                    await conn.execute(sql, *arguments)
                await conn.execute("ANALYZE")

    async def explain_hot_queries(self, platform: Platform) -> dict[str, list[str]]:
        """The plans, at the preloaded size, of the statements each hop runs per batch (generic plans: the
        statement prepared once, as asyncpg does, and planned without its values)."""
        plans: dict[str, list[str]] = {}
        for service, statements in HOT_QUERIES.items():
            async with self.database(platform, service) as conn:
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                for name, sql in statements.items():
                    parameters = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
                    arguments = f"({', '.join(['NULL'] * parameters)})" if parameters else ""
                    try:
                        async with conn.transaction():  # EXPLAIN of a write plans it without running it
                            await conn.execute(f"PREPARE hot AS {sql}")
                            rows = await conn.fetch(f"EXPLAIN EXECUTE hot{arguments}")
                            await conn.execute("DEALLOCATE hot")
                        plans[f"{service} {name}"] = [row[0] for row in rows]
                    except asyncpg.PostgresError as error:
                        plans[f"{service} {name}"] = [f"not explained: {error}"]
                        await conn.execute("DEALLOCATE ALL")
        return plans

    # --- latency ------------------------------------------------------------------------------
    async def latency(
        self,
        platform: Platform,
        producer: AIOKafkaProducer,
        rate: int,
        cpu: dict[str, Any],
        tag: str = "rate",
        meter: CostMeter | None = None,
    ) -> dict[str, Any]:
        """The latency at `rate`, its CPU (`cpu`) and, with `meter`, its cost per event (issue 34) as `cost`."""

        async def delivered() -> int:
            return platform.sent_count()

        self.sms_expected += rate_events(rate) // EVENTS_PER_ORDER * SMS_PER_ORDER
        cost: dict[str, Any] = {}
        async with measured(meter, rate_events(rate), cost):
            with cpu_used(platform, cpu):  # until the last SMS: reading the topics back afterwards is not load
                row = await self.latency_of(platform.prefix, delivered, producer, rate, f"{tag}{rate}")
        return row | ({"cost": cost} if meter else {})

    @contextlib.asynccontextmanager
    async def database(self, platform: Platform, service: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection to `service`'s database, closed after the block."""
        conn = await asyncpg.connect(database_dsn(self.infrastructure.postgres_dsn, platform.database(service)))
        try:
            yield conn
        finally:
            await conn.close()

    async def analyze(self, platform: Platform) -> None:
        """ANALYZE every service's database, as autovacuum does within a minute of a load. The phases after the
        warm-up then run on a warmed-up system's plans: without statistics, orders' lock of a batch's orders probed
        the index of the partner's orders by update time, reading the partner's whole range for each key (4-24 ms a
        call at 1,000 ev/s; docs/performance.md, issue 34)."""
        for service in SERVICES:
            async with self.database(platform, service) as conn:
                await conn.execute("ANALYZE")

    def exactly_once(self, platform: Platform) -> dict[str, int]:
        """Every SMS the platform was sent work for, handed to the provider exactly once over the whole run."""
        handed_over = Counter(sms["id"] for sms in platform.sent_sms())
        return {
            "sms_expected": self.sms_expected,
            "sms_handed_over": sum(handed_over.values()),
            "distinct": len(handed_over),
            "duplicates": sum(n - 1 for n in handed_over.values()),
            "missing": max(0, self.sms_expected - len(handed_over)),
        }

    async def latency_of(
        self, prefix: str, delivered: Callable[[], Awaitable[int]], producer: AIOKafkaProducer, rate: int, tag: str
    ) -> dict[str, Any]:
        """Publish at `rate` to the pipeline under `prefix` until every SMS is out (`delivered` counts them), then
        read each hop's broker timestamps back from its topics."""
        orders = max(1, int(rate * RATE_SECONDS) // EVENTS_PER_ORDER)
        events = interleaved(orders, tag)
        sent_at: dict[tuple[str, str], float] = {}
        achieved = await self._publish_at(prefix, producer, rate, events, sent_at, delivered, orders)
        hops = await self._hop_times(prefix, f"{tag}-")
        total: list[float] = []
        per_hop: dict[str, list[float]] = {"orders": [], "campaigns": [], "notifier": []}
        for key, published in sent_at.items():
            times = hops.get(key)
            if times is None or len(times) < 3:
                continue
            changed, requested, dispatched = times
            total.append(dispatched - published)
            per_hop["orders"].append(changed - published)
            per_hop["campaigns"].append(requested - changed)
            per_hop["notifier"].append(dispatched - requested)
        return {
            "target_events_per_second": rate, "achieved_events_per_second": round(achieved, 1), "samples": len(total),
            "publish_to_dispatched_ms": percentiles(total),
            "per_hop_ms": {hop: percentiles(values) for hop, values in per_hop.items()},
        }  # fmt: skip

    async def _publish_at(
        self,
        prefix: str,
        producer: AIOKafkaProducer,
        rate: int,
        events: list[Envelope[Any]],
        sent_at: dict[tuple[str, str], float],
        delivered: Callable[[], Awaitable[int]],
        orders: int,
    ) -> float:
        """Publish `events` at `rate` per second, noting when each order's "shipped" went out; wait for the SMS.
        Returns the rate achieved."""
        inbound = prefixed(Topic.ORDERS_INBOUND, prefix)
        delivered_before = await delivered()
        # Serialized up front: the load generator shares the machine, and its work is not the platform's.
        records = [(event.to_bytes(), event.key(), shipped(event)) for event in events]
        started = time.monotonic()
        next_tick = started
        for i, (value, key, order) in enumerate(records):
            due = started + i / rate
            if due > time.monotonic():
                # Latency counts from the actual publish (`sent_at`): the wait for the tick is the upstream's.
                next_tick = max(due, next_tick + PUBLISH_TICK_S)
                await asyncio.sleep(next_tick - time.monotonic())
            await producer.send(inbound, value, key=key)
            if order is not None:
                sent_at[order] = time.time()
        await producer.flush()
        achieved = len(events) / (time.monotonic() - started)

        async def drained() -> bool:
            return await delivered() - delivered_before >= orders * SMS_PER_ORDER

        await wait_for(drained, 300)
        return achieved

    async def _hop_times(self, prefix: str, tag: str) -> dict[tuple[str, str], list[float]]:
        """(partner, order) -> broker timestamps (s) of: changed to shipped, its SendSms, its SmsDispatched."""
        changed_at: dict[tuple[str, str], float] = {}
        requested_at: dict[tuple[str, str], float] = {}
        dispatched_at: dict[tuple[str, str], float] = {}
        shipped_commands: set[str] = set()
        for topic in (Topic.ORDER_STATUS_CHANGED, Topic.SEND_SMS, Topic.SMS_EVENTS):
            for record in await read_topic(self.infrastructure.kafka_bootstrap, prefixed(topic, prefix), timeout_s=60):
                document = json.loads(record.value or b"{}")
                data = document.get("data", {})
                key = (document.get("partnerid", ""), data.get("order_id", ""))
                if not key[1].startswith(tag):
                    continue
                when = record.timestamp / 1000
                if topic is Topic.ORDER_STATUS_CHANGED and data.get("to_status", {}).get("code") == "shipped":
                    changed_at[key] = when
                elif topic is Topic.SEND_SMS and "отгружен" in data.get("text", ""):
                    requested_at[key] = when
                    shipped_commands.add(data.get("idempotency_key", ""))
                elif document.get("type") == "sms.dispatched.v1" and data.get("send_sms_id") in shipped_commands:
                    dispatched_at[key] = when
        return {
            key: [changed_at[key], requested_at[key], dispatched]
            for key, dispatched in dispatched_at.items()
            if key in changed_at and key in requested_at
        }

    # --- REST writes --------------------------------------------------------------------------
    async def rest_writes(self, platform: Platform) -> dict[str, Any]:
        """Issue 29's item 17: the latency of each REST write of orders and of the campaign preview, as a ratio to
        the registry's status POST measured in the same run: sequential requests on the idle platform, then
        `REST_RATE` requests/s of each kind for `REST_SECONDS` (open loop: a request is sent when due, whether
        the ones before have answered or not). The partner has the example statuses and no campaign, so nothing
        reaches the SMS pipeline."""
        async with platform.client("status-registry", REST_PARTNER) as registry:
            (await registry.put("/v1/statuses", json={"statuses": example_status_list()})).raise_for_status()
        async with contextlib.AsyncExitStack() as clients:
            registry, orders, campaigns = [
                await clients.enter_async_context(platform.client(service, REST_PARTNER))
                for service in ("status-registry", "orders", "campaigns")
            ]
            # In this order: the status POST sets the payment of the order the PUT created under the same key.
            kinds: dict[str, Callable[[str], Awaitable[httpx.Response]]] = {
                REST_BASELINE: lambda key: registry.post(
                    "/v1/statuses", json={"code": key, "type": "general", "name": key, "position": 1000}
                ),
                "orders PUT /v1/orders/{id}": lambda key: orders.put(f"/v1/orders/{key}", json=REST_ORDER),
                "orders POST /v1/orders/{id}/status": lambda key: orders.post(
                    f"/v1/orders/{key}/status", json={"code": "paid"}
                ),
                "campaigns POST /v1/campaigns/preview": lambda key: campaigns.post(
                    "/v1/campaigns/preview", json=REST_PREVIEW
                ),
            }
            for send in kinds.values():  # not measured: each route's first requests
                for n in range(REST_WARMUP_REQUESTS):
                    await timed(send(f"rest-warm-{n}"))
            idle = {
                kind: [await timed(send(f"rest-idle-{n}")) for n in range(REST_IDLE_REQUESTS)]
                for kind, send in kinds.items()
            }
            count = max(2, round(REST_RATE * REST_SECONDS))
            loaded = {kind: await at_rate(send, "rest-rate", count) for kind, send in kinds.items()}
        return {
            "partner": REST_PARTNER,
            "baseline": REST_BASELINE,
            "loads": [
                {"load": "idle", "requests_per_kind": REST_IDLE_REQUESTS, "kinds": rest_series(idle)},
                {"load": f"{REST_RATE:g}/s", "requests_per_second": REST_RATE, "seconds": REST_SECONDS,
                 "requests_per_kind": count, "kinds": rest_series(loaded)},
            ],
        }  # fmt: skip

    # --- registry lookups and the token endpoint (issue 30) -------------------------------------
    async def lookups(self, platform: Platform) -> dict[str, Any]:
        """The registry's GET of one status with an API client's token (Ed25519, verified with identity's JWKS on
        every request) against a bare FastAPI endpoint answering the same JSON without any check."""
        port = free_port()
        bare = baseline_process("bare", str(port))
        try:
            await asyncio.sleep(2)
            client_id, secret = await api_client(platform, PARTNERS[0], "Bench lookups", ["statuses:read"])
            token = await access_token(platform, client_id, secret)
            registry = await requests_per_second(
                f"{platform.url('status-registry')}/v1/statuses/shipped", {"Authorization": f"Bearer {token}"}
            )
            baseline = await requests_per_second(f"http://127.0.0.1:{port}/v1/statuses/shipped", {})
        finally:
            bare.terminate()
        return {
            "token": "identity access token (Ed25519, JWKS)",
            "registry_rps": registry,
            "bare_fastapi_rps": baseline,
            "ratio": round(registry / baseline, 3),
        }

    async def token_endpoint(self, platform: Platform) -> dict[str, Any]:
        """`POST /oauth/token` (client credentials, client_secret_basic) from `TOKEN_WORKERS` clients at once, each
        sending its next request when the last one answered, for `TOKEN_SECONDS`."""
        client_id, secret = await api_client(platform, PARTNERS[0], "Bench tokens", ["orders:write"])
        done, errors = 0, Counter[str]()
        url = f"{platform.url('identity')}/oauth/token"
        form = {"grant_type": "client_credentials"}
        async with httpx.AsyncClient(auth=(client_id, secret), timeout=30) as client:
            for _ in range(REST_WARMUP_REQUESTS):  # not measured: the route's first requests
                (await client.post(url, data=form)).raise_for_status()
            deadline = time.monotonic() + TOKEN_SECONDS

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    answer = await client.post(url, data=form)
                    if answer.status_code == 200:
                        done += 1
                    else:
                        errors[f"{answer.status_code} {answer.text[:200]}"] += 1

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(TOKEN_WORKERS)))
            elapsed = time.monotonic() - started
        return {
            "workers": TOKEN_WORKERS,
            "seconds": round(elapsed, 2),
            "tokens": done,
            "requests_per_second": round(done / elapsed, 1),
            "errors": sum(errors.values()),
            "first_error": next(iter(errors), None),
        }


def profiles_folder(when: str, run: str = "") -> Path:
    """Where BENCH_PROFILE=1 writes the folded stacks of the run reported at `when` (its report's name beside it):
    `bench/results/profile-[<run>-]<when>/<phase>/<service>.folded`."""
    return ROOT / "bench" / "results" / "-".join(filter(None, ["profile", run, when.replace(":", "")]))


@contextlib.contextmanager
def profiled(platform: Platform, folder: Path) -> Iterator[None]:
    """py-spy samples each service process while the block runs (BENCH_PROFILE=1); folded stacks per service."""
    if not PROFILE:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    spies = {
        instance: subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(platform.processes[instance].pid),
             "--rate", "200", "--gil", "--format", "raw", "--output", str(folder / f"{instance}.folded"),
             "--nonblocking"],
            stdout=subprocess.DEVNULL,
        )
        for _, instance in service_processes(platform)
    }  # fmt: skip
    try:
        yield
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(timeout=60)
        say(f"profiles (folded stacks; `python -m devtools.profile_summary FILE`): {folder}")


async def timed(request: Awaitable[httpx.Response]) -> float | str:
    """The seconds a request took, or what went wrong (a refusal's status and body, a transport error)."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    return elapsed if response.is_success else f"{response.status_code} {response.text[:300]}"


async def at_rate(send: Callable[[str], Awaitable[httpx.Response]], tag: str, count: int) -> list[float | str]:
    """`count` requests at `REST_RATE` per second, each sent when due (open loop), keyed `tag-0`, `tag-1`..."""
    started = time.monotonic()
    pending = []
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / REST_RATE - time.monotonic()))
        pending.append(asyncio.create_task(timed(send(f"{tag}-{n}"))))
    return list(await asyncio.gather(*pending))


def rest_series(results: dict[str, list[float | str]]) -> dict[str, dict[str, Any]]:
    """Per kind: p50/p95/p99 in ms, errors, and the p50 and p95 as ratios to the baseline's (the registry's POST)."""
    kinds: dict[str, dict[str, Any]] = {}
    for kind, outcomes in results.items():
        errors = [o for o in outcomes if isinstance(o, str)]
        kinds[kind] = percentiles([o for o in outcomes if isinstance(o, float)]) | {
            "errors": len(errors), "first_error": errors[0] if errors else None,
        }  # fmt: skip
    base = kinds[REST_BASELINE]
    for values in kinds.values():
        for p in ("p50", "p95"):
            values[f"ratio_{p}"] = round(values[p] / base[p], 2) if values[p] and base[p] else None
    return kinds


async def api_client(platform: Platform, partner: str, name: str, scopes: list[str]) -> tuple[str, str]:
    """An API client of `partner` (created with the platform's partner token, as a partner admin would): its id and
    secret."""
    async with platform.client("identity", partner) as identity:
        created = await identity.post("/v1/clients", json={"name": name, "scopes": scopes})
    created.raise_for_status()
    return str(created.json()["client_id"]), str(created.json()["client_secret"])


async def access_token(platform: Platform, client_id: str, secret: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{platform.url('identity')}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def baseline_process(*args: str) -> subprocess.Popen[bytes]:
    """A baseline process (devtools.bench_baselines); started once per run, so a blocking start is fine."""
    return subprocess.Popen([sys.executable, "-m", "devtools.bench_baselines", *args])


async def requests_per_second(url: str, headers: dict[str, str], seconds: float = 5, workers: int = 16) -> float:
    done = 0
    async with httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=workers)) as client:
        (await client.get(url)).raise_for_status()
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                (await client.get(url)).raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return round(done / seconds, 1)


def floor_databases() -> list[str]:
    """The floor's databases, one per hop (FLOOR_HOPS' order)."""
    return [f"floor{os.getpid()}_{hop}" for hop in FLOOR_HOPS]


def rate_events(rate: int) -> int:
    """The upstream events a latency phase at `rate` publishes: whole orders, `RATE_SECONDS` of them."""
    return max(1, int(rate * RATE_SECONDS) // EVENTS_PER_ORDER) * EVENTS_PER_ORDER


def kafka_port(bootstrap: str) -> int:
    return int(bootstrap.split(",")[0].rsplit(":", 1)[1])


def platform_meter(infrastructure: Infrastructure, platform: Platform) -> CostMeter:
    """Issue 34's meter of the platform: every service process, the services' databases."""
    return CostMeter(
        infrastructure.postgres_dsn,
        kafka_port(infrastructure.kafka_bootstrap),
        Pipeline(
            {instance: platform.processes[instance].pid for _, instance in service_processes(platform)},
            {platform.database(service): service for service in SERVICES},
        ),
    )


def measured(
    meter: CostMeter | None, events: int, into: dict[str, Any], settle_s: float = PG_STATS_LAG_S
) -> contextlib.AbstractAsyncContextManager[None]:
    return meter.phase(events, into, settle_s) if meter else contextlib.nullcontext()


async def rest_phase(meter: CostMeter, what: str) -> dict[str, Any]:
    """Issue 34's rest: `REST_SETTLE_SECONDS` for the pipeline to settle after its last phase, then
    `REST_PHASE_SECONDS` with no traffic at all, measured."""
    say(f"{what} at rest: {REST_SETTLE_SECONDS:g} s to settle, then {REST_PHASE_SECONDS:g} s measured")
    await asyncio.sleep(REST_SETTLE_SECONDS)
    result: dict[str, Any] = {}
    async with meter.phase(0, result, settle_s=0):  # at rest the counters' flush lag shifts nothing
        await asyncio.sleep(REST_PHASE_SECONDS)
    return result


async def broker_alone_phase(infrastructure: Infrastructure) -> dict[str, Any]:
    say(f"the broker with none of the bench's clients for {BROKER_ALONE_SECONDS:g} s")
    return await broker_alone(BROKER_ALONE_SECONDS, kafka_port(infrastructure.kafka_bootstrap))


def _floor_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the floor's hops, the broker and PostgreSQL."""
    return {f"floor {hop}": cpu_seconds(pid) for hop, pid in pids.items()} | infrastructure_cpu()


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median status changes/s, with every round's figure beside it."""
    ordered = sorted(rounds, key=lambda r: r["status_changes_per_second"])
    rates = [r["status_changes_per_second"] for r in rounds]
    return ordered[(len(ordered) - 1) // 2] | {"rounds": len(rounds), "rounds_status_changes_per_second": rates}


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50": None, "p95": None, "p99": None}
    q = statistics.quantiles([v * 1000 for v in values], n=100)
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


def _signal(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, signum)


def own_postgres() -> infra.InfraSettings | None:
    """The bench's own PostgreSQL server (`BENCH_OWN_POSTGRES`, on unless infrastructure is given): data in
    .state/bench, port `BENCH_POSTGRES_PORT`."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TEST_POSTGRES_DSN")
    if given or not OWN_POSTGRES:
        return None
    return infra.InfraSettings(state_dir=ROOT / ".state" / "bench", postgres_port=OWN_POSTGRES_PORT)


def running_infrastructure() -> Infrastructure:
    """Kafka and PostgreSQL already running (KAFKA_BOOTSTRAP_SERVERS and TEST_POSTGRES_DSN, as the tests take
    them), else the local ones `make infra-up` starts (started here when missing), with the bench's own PostgreSQL
    server beside (`own_postgres`, stopped by `main` at the end). The bench keeps to its own topic prefixes and
    databases on either, and drops them at the end."""
    bootstrap, dsn = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("TEST_POSTGRES_DSN")
    if bootstrap and dsn:
        return Infrastructure(bootstrap, dsn, "given infrastructure")
    settings = infra.InfraSettings()
    infra.up(settings)
    own = own_postgres()
    if own is None:
        return Infrastructure(infra.local_bootstrap(settings), infra.postgres_dsn(settings), "local infrastructure")
    infra.start_postgres(own)
    return Infrastructure(infra.local_bootstrap(settings), infra.postgres_dsn(own), "local Kafka, own PostgreSQL")


async def run() -> dict[str, Any]:
    run_started = time.monotonic()
    infrastructure = running_infrastructure()
    say("machine costs: a wake-up, a broker request")
    costs = await machine_costs(infrastructure.kafka_bootstrap, lambda: infrastructure_cpu()["kafka"])
    broker_idle = await broker_alone_phase(infrastructure)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(infrastructure, workdir)
    platform = Platform(infrastructure, workdir, extra_env=FAST_PROVIDER)
    await platform.create()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": os.uname().nodename,
        "machine_costs": costs,
        "instances": INSTANCES,
        "broker_alone": broker_idle,
    }
    try:
        for service in SERVICES:
            platform.start(service)
        further = [f"{service}.{n}" for service in SCALED_SERVICES for n in range(2, INSTANCES + 1)]
        for instance in further:
            platform.start(instance.split(".")[0], instance)
        await platform.wait_ready(*SERVICES, *further)
        async with warmed_up(bench, platform, infrastructure) as producer:
            await whole_run_phases(bench, platform, infrastructure, producer, report)
        report["run_seconds"] = round(time.monotonic() - run_started)
    finally:
        platform.stop_all()
        await platform.drop()
        await infra.delete_topics(infrastructure.kafka_bootstrap, platform.prefix)
    return report


async def whole_run_phases(
    bench: Bench,
    platform: Platform,
    infrastructure: Infrastructure,
    producer: AIOKafkaProducer,
    report: dict[str, Any],
) -> None:
    """Every phase of the whole bench after the warm-up, in order, into `report`, with its targets at the end."""
    profiles = profiles_folder(report["when"])
    report["full_speed"] = await full_speed_measured(bench, platform, producer, profiles / "full-speed")
    sizes = await bench.record_sizes(platform)
    report["record_bytes"] = {str(topic): size for topic, size in sizes.items()}
    say("each stage alone: orders with campaigns and the notifier paused, then those two")
    report["stages_alone"] = await bench.stages_alone(platform, producer)
    say(f"raw relay baseline: {report['full_speed']['events']} records over the same four topics")
    report["raw_relay"] = await bench.baseline(producer, report["full_speed"]["events"], sizes)
    platform_events_per_second = report["full_speed"]["events"] / report["full_speed"]["sms_seconds"]
    report["platform_vs_raw_relay"] = round(platform_events_per_second / report["raw_relay"]["records_per_second"], 3)
    report["latency"] = []
    meter = platform_meter(infrastructure, platform)
    for rate in RATES:
        report["latency"].append(await latency_measured(bench, platform, producer, rate, profiles, meter))
    report["rest"] = await rest_phase(meter, "the platform")
    say(f"floor pipeline: {FULL_SPEED_ORDERS} orders at full speed, then {RATES} events/s, then at rest")
    report["floor"] = await bench.floor_phases(producer, sizes)
    say(f"REST writes: sequential, then {REST_RATE:g}/s of each for {REST_SECONDS:g} s")
    report["rest_writes"] = await bench.rest_writes(platform)
    say(f"cost versus size: {PRELOAD_CAMPAIGNS} more active campaigns per partner")
    preload_started = time.monotonic()
    await bench.preload_campaigns(platform, PRELOAD_CAMPAIGNS)
    report["preload_seconds"] = {"campaigns": round(time.monotonic() - preload_started, 1)}
    report["with_campaigns"] = await size_phase(bench, platform, producer, "camp")
    say(f"cost versus size: {PRELOAD_ORDERS} orders and their history preloaded")
    preload_started = time.monotonic()
    await bench.preload_orders(platform, PRELOAD_ORDERS)
    report["preload_seconds"]["orders"] = round(time.monotonic() - preload_started, 1)
    report["with_orders"] = await size_phase(bench, platform, producer, "big")
    report["hot_query_plans"] = await bench.explain_hot_queries(platform)
    report["backtest"] = await backtest_phase(bench, platform, producer)
    say("registry lookups against a bare FastAPI endpoint")
    report["registry_lookups"] = await bench.lookups(platform)
    say(f"token endpoint: {TOKEN_WORKERS} clients at once for {TOKEN_SECONDS:g} s")
    report["token_endpoint"] = await bench.token_endpoint(platform)
    report["webhooks"] = await webhooks_phase(bench, platform, producer, PARTNERS)
    report["journeys"] = await journeys_phase(bench, platform, producer)
    report["processes"] = {
        instance: process_usage(platform.processes[instance].pid) for _, instance in service_processes(platform)
    }
    report["exactly_once"] = bench.exactly_once(platform)
    report["targets"] = targets(report, PRELOAD_CAMPAIGNS, PRELOAD_ORDERS) + target_rows(journeys_rows(report))


async def run_alone(phase: str) -> dict[str, Any]:
    """`BENCH_ONLY=rest_writes`, `tokens` or `webhooks`: the services started as for the whole bench, and that phase
    alone (tokens: the registry lookups with an identity token, the token endpoint, every service's peak RSS;
    webhooks: devtools.bench_webhooks, with the bench's partners, statuses and campaigns)."""
    infrastructure = running_infrastructure()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    platform = Platform(infrastructure, workdir, extra_env=FAST_PROVIDER)
    await platform.create()
    bench = Bench(infrastructure, workdir)
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": os.uname().nodename,
        "only": phase,
    }
    try:
        if phase == "cost":  # before anything of the bench's starts
            report["broker_alone"] = await broker_alone_phase(infrastructure)
        for service in SERVICES:
            platform.start(service)
        await platform.wait_ready(*SERVICES)
        if phase == "cost":
            report |= await cost_alone(bench, platform, infrastructure, report["when"])
            rows = cost_rows(report)
        elif phase == "full_speed":
            report |= await full_speed_alone(bench, platform, infrastructure, report["when"])
            rows = full_speed_rows(report)
        elif phase == "journeys":
            report |= await journeys_alone(bench, platform)
            rows = journeys_rows(report)
        elif phase == "rest_writes":
            say(f"REST writes: sequential, then {REST_RATE:g}/s of each for {REST_SECONDS:g} s")
            report["rest_writes"] = await bench.rest_writes(platform)
            rows = rest_write_rows(report)
        elif phase == "webhooks":
            async with warmed_up(bench, platform, infrastructure) as producer:
                report["webhooks"] = await webhooks_phase(bench, platform, producer, PARTNERS)
            report["processes"] = {
                instance: process_usage(platform.processes[instance].pid) for _, instance in service_processes(platform)
            }
            rows = webhook_rows(report)
        elif phase == "backtest":
            async with warmed_up(bench, platform, infrastructure) as producer:
                say(f"{PRELOAD_ORDERS} orders and their history preloaded")
                await bench.preload_orders(platform, PRELOAD_ORDERS)
                report["backtest"] = await backtest_phase(bench, platform, producer)
            rows = backtest_rows(report)
        else:
            await bench.define(platform)
            say("registry lookups against a bare FastAPI endpoint")
            report["registry_lookups"] = await bench.lookups(platform)
            say(f"token endpoint: {TOKEN_WORKERS} clients at once for {TOKEN_SECONDS:g} s")
            report["token_endpoint"] = await bench.token_endpoint(platform)
            report["processes"] = {
                instance: process_usage(platform.processes[instance].pid) for _, instance in service_processes(platform)
            }
            rows = token_rows(report)
        report["targets"] = target_rows(rows)
    finally:
        platform.stop_all()
        await platform.drop()
        await infra.delete_topics(infrastructure.kafka_bootstrap, platform.prefix)
    return report


@contextlib.asynccontextmanager
async def warmed_up(
    bench: Bench, platform: Platform, infrastructure: Infrastructure
) -> AsyncIterator[AIOKafkaProducer]:
    """The bench's partners, statuses and campaigns defined, and the upstream producer after the warm-up's orders
    (not measured: connections, prepared statements, caches and the broker's JIT settle first)."""
    await bench.define(platform)
    await asyncio.sleep(2)
    producer = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap, linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        say(f"warm-up: {WARMUP_ORDERS} orders")
        await bench.full_speed(platform, producer, WARMUP_ORDERS, "warm", rounds=1)
        await bench.analyze(platform)
        yield producer
    finally:
        await producer.stop()


async def full_speed_measured(
    bench: Bench, platform: Platform, producer: AIOKafkaProducer, folder: Path, meter: CostMeter | None = None
) -> dict[str, Any]:
    """The platform's full-speed rounds with their CPU and batches (profiled into `folder` with BENCH_PROFILE=1)
    and, with `meter`, where PostgreSQL's work came from (issue 34), as `cost`."""
    say(f"full speed: {FULL_SPEED_ORDERS} orders, {FULL_SPEED_ORDERS * CHANGES_PER_ORDER} status changes")
    cpu: dict[str, Any] = {}
    cost: dict[str, Any] = {}
    counts = await pipeline_counts(platform)
    events = FULL_SPEED_ROUNDS * FULL_SPEED_ORDERS * EVENTS_PER_ORDER
    async with measured(meter, events, cost):  # the meter's counters settle after the rounds' CPU is taken
        with profiled(platform, folder), cpu_used(platform, cpu):
            result = await bench.full_speed(platform, producer)
    result |= {"cpu": cpu, "batches": batch_means(counts, await pipeline_counts(platform))}
    return result | ({"cost": cost} if meter else {})


async def latency_measured(
    bench: Bench, platform: Platform, producer: AIOKafkaProducer, rate: int, profiles: Path, meter: CostMeter
) -> dict[str, Any]:
    """The latency at `rate` with its CPU, its consumers' and relays' batches, and its cost per event (issue 34)."""
    say(f"latency at {rate} events/s for {RATE_SECONDS:.0f} s")
    cpu: dict[str, Any] = {}
    counts = await pipeline_counts(platform)
    with profiled(platform, profiles / f"{rate}-per-second"):
        latency = await bench.latency(platform, producer, rate, cpu, meter=meter)
    return latency | {"cpu": cpu, "batches": batch_means(counts, await pipeline_counts(platform))}


async def cost_alone(bench: Bench, platform: Platform, infrastructure: Infrastructure, when: str) -> dict[str, Any]:
    """`BENCH_ONLY=cost`: issue 34's phases alone: the platform and the floor at the fixed rates and at rest."""
    report: dict[str, Any] = {"latency": []}
    async with warmed_up(bench, platform, infrastructure) as producer:
        profiles = profiles_folder(when, "cost")
        if COST_AFTER_FULL_SPEED:
            report["full_speed"] = await full_speed_measured(bench, platform, producer, profiles / "full-speed")
        sizes = await bench.record_sizes(platform)
        meter = platform_meter(infrastructure, platform)
        for rate in RATES:
            report["latency"].append(await latency_measured(bench, platform, producer, rate, profiles, meter))
        report["rest"] = await rest_phase(meter, "the platform")
        say(f"floor pipeline: {RATES} events/s, then at rest")
        report["floor"] = await bench.floor_phases(producer, sizes, full_speed=False)
    report["exactly_once"] = bench.exactly_once(platform)
    return report


async def full_speed_alone(
    bench: Bench, platform: Platform, infrastructure: Infrastructure, when: str
) -> dict[str, Any]:
    """`BENCH_ONLY=full_speed`: the platform's full-speed rounds and the floor's, with what each cost, alone."""
    report: dict[str, Any] = {}
    async with warmed_up(bench, platform, infrastructure) as producer:
        folder = profiles_folder(when, "full_speed") / "full-speed"
        meter = platform_meter(infrastructure, platform)
        report["full_speed"] = await full_speed_measured(bench, platform, producer, folder, meter)
        sizes = await bench.record_sizes(platform)
        say(f"floor pipeline: {FULL_SPEED_ORDERS} orders at full speed")
        report["floor"] = await bench.floor_phases(producer, sizes, rates=False)
    report["exactly_once"] = bench.exactly_once(platform)
    return report


async def size_phase(bench: Bench, platform: Platform, producer: AIOKafkaProducer, tag: str) -> dict[str, Any]:
    """The full-speed and 100 ev/s phases again, at the size just preloaded."""
    result = {"full_speed": await bench.full_speed(platform, producer, FULL_SPEED_ORDERS, tag)}
    result["latency_100"] = await bench.latency(platform, producer, 100, {}, f"{tag}rate")
    return result


def main() -> None:
    if ONLY not in ("", *ALONE):
        raise SystemExit(f"BENCH_ONLY={ONLY}: the phases that run alone are {', '.join(ALONE)}")
    try:
        report = asyncio.run(run_alone(ONLY) if ONLY else run())
    finally:
        if (own := own_postgres()) is not None:
            infra.stop_postgres(own)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{report['when'].replace(':', '')}{'-' + ONLY if ONLY else ''}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tables = {
        "rest_writes": rest_writes_table,
        "tokens": tokens_table,
        "backtest": backtest_table,
        "cost": cost_table,
        "full_speed": full_speed_table,
        "webhooks": webhooks_table,
        "journeys": journeys_table,
    }
    print(tables.get(ONLY, table)(report))
    say(f"report: {path}")


if __name__ == "__main__":
    main()
