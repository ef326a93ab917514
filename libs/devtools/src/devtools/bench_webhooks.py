"""`make bench`'s webhooks phase (issue 31, item 7; `BENCH_ONLY=webhooks` runs it alone).

Each bench partner registers one endpoint for its orders' status changes, served by a local receiver
(`devtools.webhook_receiver`, every signature checked with the `standardwebhooks` verifier). Measured:

* **deliveries per second**: the webhooks service alone working off a backlog: paused (SIGSTOP) while orders turns
  `WEBHOOK_BACKLOG_ORDERS` orders into status changes on the topic, then resumed, until every change has reached its
  endpoint;
* **latency** at `WEBHOOK_RATE` upstream events/s (the bench's latency phase, SMS campaigns active): from each status
  change's broker timestamp on `orders.status-changed.v1` to its webhook arriving at the receiver, beside the SMS
  path's p50 of the same traffic (the "shipped" change's broker timestamp to its `SmsDispatched`);
* the same latency again with `WEBHOOK_DEAD_DELIVERIES` deliveries waiting on a dead endpoint (a port nothing listens
  on: every attempt's connection is refused) of the first partner, preloaded into the webhooks database as the
  service stores them and due at once, so that the service keeps retrying them while the others' are measured;
* the webhooks service's peak RSS over the whole phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from contracts.topics import Topic, prefixed
from devtools.bench_accounting import process_usage
from devtools.platform import Platform, free_port
from devtools.webhook_receiver import ENDPOINTS, Receiver, register
from servicekit.ops import read_topic

if TYPE_CHECKING:
    from devtools.bench import Bench

# devtools.bench imports this module: what this one uses of it (its helpers, its constants) is imported where used.

# 40 upstream events/s make 60 status changes/s: under half of what the service delivered working off a backlog on
# this machine (114-146/s). At 100 (150 changes/s) the webhooks queued, and a p50 taken at saturation measures the
# queue's length, which any small loss of throughput multiplies (1.97x to 12x with the dead endpoint).
WEBHOOK_RATE = int(os.environ.get("BENCH_WEBHOOK_RATE", "40"))
WEBHOOK_BACKLOG_ORDERS = int(os.environ.get("BENCH_WEBHOOK_BACKLOG_ORDERS", "500"))
WEBHOOK_DEAD_DELIVERIES = int(os.environ.get("BENCH_WEBHOOK_DEAD_DELIVERIES", "100000"))
DEAD_CHANGES_PER_ORDER = 4  # the dead endpoint's backlog: this many status changes of each of its orders
CHANGES_PER_ORDER = 6  # devtools.bench.journey's

# $1 messages for the endpoint $2 of partner $3, as the service stores a status change's: DEAD_CHANGES_PER_ORDER per
# order, in sequence; the first of each order due now, the others held behind it (no next_attempt_at, as the
# service writes a change behind a pending earlier one of its order); $4 the body.
PRELOAD_DEAD_SQL = f"""
INSERT INTO messages (id, partner_id, endpoint_id, event_id, event_type, order_id, sequence, payload,
                      next_attempt_at)
SELECT 'msg_dead_' || n, $3, $2, 'dead-event-' || n, 'order.status_changed', 'dead-' || n / {DEAD_CHANGES_PER_ORDER},
       n % {DEAD_CHANGES_PER_ORDER} + 1, $4, CASE WHEN n % {DEAD_CHANGES_PER_ORDER} = 0 THEN now() END
FROM generate_series(0, $1::int - 1) AS n
"""


async def webhooks_phase(
    bench: Bench, platform: Platform, producer: AIOKafkaProducer, partners: tuple[str, ...]
) -> dict[str, Any]:
    from devtools.bench import say

    pid = platform.processes["webhooks"].pid
    receivers = {partner: Receiver() for partner in partners}
    try:
        for partner, receiver in receivers.items():
            await register(platform, partner, receiver)
        say(f"webhooks: {WEBHOOK_BACKLOG_ORDERS} orders' status changes as a backlog, then the service resumed")
        throughput = await backlog_drain(bench, platform, producer, receivers, pid)
        say(f"webhooks: latency at {WEBHOOK_RATE} events/s beside the SMS path")
        without = await latency(bench, platform, producer, receivers, "whrate")
        say(f"webhooks: {WEBHOOK_DEAD_DELIVERIES} deliveries waiting on a dead endpoint, the latency again")
        dead_url = f"http://127.0.0.1:{free_port()}/dead"  # nothing listens there: connections are refused
        preload_started = time.monotonic()
        await preload_dead(bench, platform, partners[0], dead_url, WEBHOOK_DEAD_DELIVERIES)
        preload_s = time.monotonic() - preload_started
        with_dead = await latency(bench, platform, producer, receivers, "whdead")
        with_dead["dead_endpoint_attempts_during"] = await dead_attempts(bench, platform)
        with_dead["preload_seconds"] = round(preload_s, 1)
        signatures = sum(len(r.deliveries()) for r in receivers.values())  # each verified with standardwebhooks
    finally:
        for receiver in receivers.values():
            receiver.close()
    return {
        "endpoints": len(receivers),
        "backlog": throughput,
        "latency": without,
        "with_dead_endpoint": with_dead | {"dead_deliveries": WEBHOOK_DEAD_DELIVERIES},
        "p50_ratio_with_dead_endpoint": _ratio(
            with_dead["change_to_webhook_ms"]["p50"], without["change_to_webhook_ms"]["p50"]
        ),
        "signatures_verified": signatures,
        "peak_rss_mb": process_usage(pid)["peak_rss_mb"],
    }


@contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def backlog_drain(
    bench: Bench, platform: Platform, producer: AIOKafkaProducer, receivers: dict[str, Receiver], pid: int
) -> dict[str, Any]:
    """Deliveries per second of the webhooks service working off status changes already on the topic."""
    from devtools.bench import end_totals, interleaved, wait_for

    changes = WEBHOOK_BACKLOG_ORDERS * CHANGES_PER_ORDER
    before = _received(receivers)
    async with end_totals(
        bench.infrastructure.kafka_bootstrap, prefixed(Topic.ORDER_STATUS_CHANGED, platform.prefix)
    ) as total:
        on_topic = await total()
        with paused(pid):
            bench.sms_expected += WEBHOOK_BACKLOG_ORDERS * 2  # the journeys' SMS go out meanwhile, counted at the end
            for event in interleaved(WEBHOOK_BACKLOG_ORDERS, "whbacklog"):
                await producer.send(prefixed(Topic.ORDERS_INBOUND, platform.prefix), event.to_bytes(), key=event.key())
            await producer.flush()

            async def on_the_topic() -> bool:
                return await total() - on_topic >= changes

            await wait_for(on_the_topic, 600)
            resumed = time.monotonic()

    async def delivered() -> bool:
        return _received(receivers) - before >= changes

    seconds = time.monotonic() - resumed + await wait_for(delivered, 600)
    return {"deliveries": changes, "seconds": round(seconds, 2), "deliveries_per_second": round(changes / seconds, 1)}


async def latency(
    bench: Bench, platform: Platform, producer: AIOKafkaProducer, receivers: dict[str, Receiver], tag: str
) -> dict[str, Any]:
    """The bench's latency phase at WEBHOOK_RATE (it waits for the SMS), then for the webhooks; each status change's
    broker timestamp against its webhook's arrival, and the SMS path's p50 from the same traffic."""
    from devtools.bench import EVENTS_PER_ORDER, RATE_SECONDS, percentiles, wait_for

    orders = max(1, int(WEBHOOK_RATE * RATE_SECONDS) // EVENTS_PER_ORDER)
    before = _received(receivers)
    sms = await bench.latency(platform, producer, WEBHOOK_RATE, {}, tag)

    async def delivered() -> bool:
        return _received(receivers) - before >= orders * CHANGES_PER_ORDER

    try:
        await wait_for(delivered, 300)
        missing = 0
    except TimeoutError:  # measured all the same, from what arrived: the report says how many did not
        missing = orders * CHANGES_PER_ORDER - (_received(receivers) - before)
    order_prefix = f"{tag}{WEBHOOK_RATE}-"
    changed_at: dict[str, float] = {}
    shipped: set[str] = set()  # the changes the SMS path's figure starts from, for a like-for-like p50
    for record in await read_topic(
        bench.infrastructure.kafka_bootstrap, prefixed(Topic.ORDER_STATUS_CHANGED, platform.prefix), timeout_s=60
    ):
        document = json.loads(record.value or b"{}")
        if document["data"]["order_id"].startswith(order_prefix):
            changed_at[document["id"]] = record.timestamp / 1000
            if document["data"]["to_status"]["code"] == "shipped":
                shipped.add(document["id"])
    arrived: dict[str, float] = {}
    for receiver in receivers.values():
        for request in receiver.requests():
            event_id = json.loads(request.body)["event_id"]
            if event_id in changed_at and event_id not in arrived:
                arrived[event_id] = request.received_at
    webhook = [arrived[event_id] - changed_at[event_id] for event_id in arrived]
    webhook_shipped = [arrived[event_id] - changed_at[event_id] for event_id in arrived if event_id in shipped]
    hops = await bench._hop_times(platform.prefix, order_prefix)
    sms_from_change = [dispatched - changed for changed, _, dispatched in hops.values()]
    return {
        "target_events_per_second": WEBHOOK_RATE,
        "achieved_events_per_second": sms["achieved_events_per_second"],
        "webhooks": len(webhook),
        "webhooks_missing_after_300_s": missing,
        "change_to_webhook_ms": percentiles(webhook),
        "shipped_change_to_webhook_ms": percentiles(webhook_shipped),
        "sms_change_to_dispatched_ms": percentiles(sms_from_change),
        "sms_publish_to_dispatched_ms": sms["publish_to_dispatched_ms"],
        "mean_webhook_ms": round(statistics.mean(webhook) * 1000, 1) if webhook else None,
    }


async def preload_dead(bench: Bench, platform: Platform, partner: str, url: str, count: int) -> None:
    """A dead endpoint of `partner` (registered through the API) and `count` of its deliveries, waiting."""
    async with platform.client("webhooks", partner) as webhooks:
        created = await webhooks.post(ENDPOINTS, json={"url": url, "event_types": ["order.status_changed"]})
    created.raise_for_status()
    body = json.dumps({"type": "order.status_changed", "version": 1, "event_id": "dead", "padding": "x" * 800})
    async with bench.database(platform, "webhooks") as conn:
        async with conn.transaction():
            await conn.execute(PRELOAD_DEAD_SQL, count, created.json()["id"], partner, body)
        await conn.execute("ANALYZE messages")
    await asyncio.sleep(2)  # the dispatcher finds them


async def dead_attempts(bench: Bench, platform: Platform) -> int:
    """The attempts made at the dead endpoint so far: what the service spent on it meanwhile."""
    async with bench.database(platform, "webhooks") as conn:
        return int(await conn.fetchval("SELECT count(*) FROM attempts WHERE message_id LIKE 'msg_dead_%'"))


def _received(receivers: dict[str, Receiver]) -> int:
    return sum(receiver.distinct() for receiver in receivers.values())


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None
