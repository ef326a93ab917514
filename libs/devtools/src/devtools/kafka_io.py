"""Committed offsets, for tests (reading a topic whole is `servicekit.ops.read_topic`)."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """What consumer group `group` has committed, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}
