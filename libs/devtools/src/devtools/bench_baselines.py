"""Processes the benchmark runs beside the platform: the raw Kafka relay baseline and a bare FastAPI endpoint.

`python -m devtools.bench_baselines relay <bootstrap> <from-topic> <to-topic> <bytes>`: forwards every record of
one topic to the next as fast as aiokafka allows, producing as the platform's relays do (idempotent, acks=all,
their batch size, one aiokafka batch per partition, the platform's headers) and padding each record to
`bytes`, the platform's mean record size on that topic: no database, no validation, auto-committed offsets.
Three of them make the same four-topic chain the platform's services make.
`python -m devtools.bench_baselines bare <port>`: uvicorn serving one FastAPI route shaped like the registry's
`GET /v1/statuses/{code}`, without a database or auth.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI

from servicekit.outbox import RELAY_REQUEST_BYTES, BatchSender


async def relay(bootstrap: str, source: str, target: str, size_bytes: str = "0") -> None:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"bench-relay-{source}", auto_offset_reset="earliest"
    )
    # The platform's relays produce as large batches, the same way (servicekit.outbox): the baseline must not
    # lose on that alone.
    size = RELAY_REQUEST_BYTES
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=size, max_request_size=size,
        enable_idempotence=True, acks="all",
    )  # fmt: skip
    record_bytes = int(size_bytes)
    await consumer.start()
    await producer.start()
    sender = BatchSender(producer)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            await sender.send_all(
                (target, record.key, padded(record.value or b"", record_bytes), platform_headers())
                for records in batches.values()
                for record in records
            )
    finally:
        await consumer.stop()
        await producer.stop()


def padded(value: bytes, size: int) -> bytes:
    """`value` with spaces after it up to `size` bytes (JSON allows trailing white space)."""
    return value + b" " * (size - len(value)) if len(value) < size else value


def platform_headers() -> list[tuple[str, bytes]]:
    """The headers the platform's outbox puts on every record: CloudEvents type and id, partner."""
    return [("ce_type", b"order.status_changed.v1"), ("ce_id", str(uuid.uuid4()).encode()), ("partnerid", b"bench-a")]


def bare_app() -> FastAPI:
    app = FastAPI()
    now = datetime.now(UTC).isoformat()

    @app.get("/v1/statuses/{code}")
    async def get_status(code: str) -> dict[str, Any]:
        return {
            "partner_id": "bench", "code": code, "name": "Отгружен", "localized_names": {"en": "Shipped"},
            "description": None, "type": "delivery", "include_in_analytics": True, "position": 1,
            "is_initial": False, "allowed_next": None, "archived": False, "version": 1,
            "created_at": now, "updated_at": now,
        }  # fmt: skip

    return app


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "relay":
        asyncio.run(relay(*args))
    else:
        uvicorn.run(bare_app(), host="127.0.0.1", port=int(args[0]), log_level="warning")


if __name__ == "__main__":
    main()
