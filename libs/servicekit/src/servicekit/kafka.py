"""Kafka plumbing shared by the services."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient


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
