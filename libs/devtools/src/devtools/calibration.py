"""What one wake-up and one broker request cost on this machine, measured at the start of `make bench`.

The platform's fixed cost per batch is made of these (a batch wakes every process on its path several times
and sends the broker a fetch, a produce and an offset commit), so they tell how far the latency and CPU
figures of one machine carry to another: on a virtual machine whose idle cores are slow to wake, the same
code pays several times what it pays on a workstation.
"""

from __future__ import annotations

import asyncio
import resource
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

SAMPLES = 200
PERIOD_S = 0.01  # 100 a second: well apart, as at a moderate rate, so every one is a wake-up of its own


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wakeup_us() -> float:
    """CPU microseconds this process spends per asyncio timer wake-up."""
    before = own_cpu_seconds()
    for _ in range(SAMPLES):
        await asyncio.sleep(PERIOD_S)
    return (own_cpu_seconds() - before) / SAMPLES * 1e6


async def broker_ms_per(action: Callable[[int], Awaitable[Any]], broker_cpu: Callable[[], float]) -> float:
    """Broker CPU milliseconds per call of `action`, called SAMPLES times, PERIOD_S apart."""
    before = broker_cpu()
    for n in range(SAMPLES):
        await action(n)
        await asyncio.sleep(PERIOD_S)
    return (broker_cpu() - before) / SAMPLES * 1000


async def machine_costs(bootstrap: str, broker_cpu: Callable[[], float]) -> dict[str, float]:
    """Wake-up cost, and the broker's CPU per single-record produce request and per offset commit."""
    topic = f"calibration-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic, enable_auto_commit=False)
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await producer.start()
        await consumer.start()
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.getmany(timeout_ms=5000)  # joined the group, partition assigned
        (partition,) = consumer.assignment()
        costs = {"wakeup_us": await wakeup_us()}
        costs["broker_ms_per_produce"] = await broker_ms_per(lambda n: producer.send_and_wait(topic, b"x"), broker_cpu)
        costs["broker_ms_per_commit"] = await broker_ms_per(
            lambda n: consumer.commit({partition: 1 + n % 2}), broker_cpu
        )
        return {name: round(value, 2) for name, value in costs.items()}
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
