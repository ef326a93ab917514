"""Kafka plumbing shared by the services."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

# What an idle consumer costs is how often it asks the broker for records and how often its client's loop wakes up to
# look: a platform at rest pays for nothing else (docs/performance.md, issue 34). The broker answers a fetch the moment
# a record arrives, so a long wait on the broker adds no latency to any record; aiokafka's own defaults (a fetch every
# 500 ms, its fetch routine waking every 200 ms whatever happens) cost every consumer seven wake-ups a second and the
# broker two requests. What the long wait does delay: a request queued behind the fetch on the same connection (the
# broker answers a connection's requests in order: ask end offsets on another client, as the status catalog does), and
# the first fetch after a seek or a rebalance, which waits for the fetch in flight (at most this long).
IDLE_FETCH_WAIT_MS = 5_000
IDLE_CONSUMER: dict[str, int] = {
    "fetch_max_wait_ms": IDLE_FETCH_WAIT_MS,
    # The fetch routine's timer: it wakes on every event it needs (a response, records consumed, a new assignment,
    # a seek) without it, so the timer only bounds a wait that nothing else ends.
    "consumer_timeout_ms": IDLE_FETCH_WAIT_MS,
}
# How long a consumer's loop waits for records in one `getmany`: it returns as soon as records arrive, and stopping
# the consumer ends it at once, so this only bounds how often an idle loop wakes up.
IDLE_POLL_MS = 30_000


def fetch_whole_assignment(consumer: AIOKafkaConsumer) -> None:
    """Keep a started consumer from fetching part of its partitions while records it fetched wait for its loop.

    aiokafka keeps one fetch per broker in flight. Once fetched records have waited 100 ms for the loop (its
    `prefetch_backoff`: a handler busy with the previous batch), it fetches the partitions without waiting records
    alone; when the loop then takes those records, their partitions join no fetch until that one returns, which on
    quiet partitions is `IDLE_FETCH_WAIT_MS` later. Records on the busy partitions waited up to five seconds
    behind it: a stream's last records at full speed (the benchmark's bimodal rounds), a sparse stream at any rate
    (test_consumer.py's quiet-partitions test). Waiting the whole fetch wait before such a partial fetch, the
    consumer fetches every partition together again as soon as its loop took the records. aiokafka exposes no
    setting for it (0.14): `uv.lock` pins the version, and this fails loudly should the attribute go away."""
    fetcher = consumer._fetcher  # set by start
    if not hasattr(fetcher, "_prefetch_backoff"):
        raise RuntimeError("aiokafka's fetcher no longer has _prefetch_backoff: see servicekit.kafka")
    fetcher._prefetch_backoff = IDLE_FETCH_WAIT_MS / 1000


async def broker_reachable(producer: AIOKafkaProducer, timeout_s: float = 2.0) -> bool:
    """A real metadata round trip: a TCP connect alone does not prove the broker serves requests."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
        return True
    except Exception:
        return False


async def topic_partitions(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of `topic` from a fresh metadata request (a consumer's cache may be empty)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            (described,) = await admin.describe_topics([topic])
            if described["error_code"] == 0 and described["partitions"]:
                return sorted(p["partition"] for p in described["partitions"])
            if asyncio.get_running_loop().time() > deadline:
                raise LookupError(f"topic {topic} does not exist; `make infra-up` creates the platform's topics")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
