"""A replica of every partner's status definitions, read from the compacted registry topic.

Orders and campaigns keep one in memory. It reads the topic from the beginning without a
consumer group (every instance needs every definition), applies a definition only when its
version is newer than what it holds (so the relay's republishing and compaction order cannot
move it backwards), and sets `ready` once it has read up to the end offsets seen at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.envelope import decode_any
from contracts.errors import ContractError
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import StatusDefinition
from servicekit.kafka import topic_partitions

log = logging.getLogger(__name__)
STATUS_EVENTS = (StatusDefinitionUpserted, StatusDefinitionArchived)
Listener = Callable[[StatusDefinition], None]


class StatusCatalog:
    def __init__(self, bootstrap_servers: str, topic: str, client_id: str = "status-catalog") -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._by_partner: dict[str, dict[str, StatusDefinition]] = {}
        self._listeners: list[Listener] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- reading -------------------------------------------------------------------------
    def get(self, partner_id: str, code: str) -> StatusDefinition | None:
        return self._by_partner.get(partner_id, {}).get(code)

    def of_partner(self, partner_id: str) -> list[StatusDefinition]:
        return list(self._by_partner.get(partner_id, {}).values())

    def on_change(self, listener: Listener) -> None:
        """Call `listener` with every definition applied from now on (e.g. to refresh an index)."""
        self._listeners.append(listener)

    # --- applying ------------------------------------------------------------------------
    def apply(self, definition: StatusDefinition) -> bool:
        """Keep `definition` when newer than the one held; returns whether it was applied."""
        codes = self._by_partner.setdefault(definition.partner_id, {})
        held = codes.get(definition.code)
        if held is not None and held.version >= definition.version:
            return False
        codes[definition.code] = definition
        for listener in self._listeners:
            listener(definition)
        return True

    def apply_raw(self, value: bytes | None) -> None:
        if value is None:  # a tombstone: the registry archives instead of deleting, so nothing to do
            return
        try:
            envelope = decode_any(value, STATUS_EVENTS)
            assert isinstance(envelope.data, StatusDefinitionUpserted | StatusDefinitionArchived)
            self.apply(envelope.data.definition)
        except ContractError as exc:
            log.warning("status catalog: skipped an unreadable record: %s", exc)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(self._topic, p) for p in await topic_partitions(self._bootstrap, self._topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end_offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._task = asyncio.create_task(self._consume(consumer, end_offsets), name="status-catalog")

    async def _consume(self, consumer: AIOKafkaConsumer, end_offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._mark_ready_if_caught_up(consumer, end_offsets)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self.apply_raw(record.value)
                if not self.ready.is_set():
                    await self._mark_ready_if_caught_up(consumer, end_offsets)
        finally:
            await consumer.stop()

    async def _mark_ready_if_caught_up(
        self, consumer: AIOKafkaConsumer, end_offsets: dict[TopicPartition, int]
    ) -> None:
        for tp, end in end_offsets.items():
            if end > 0 and await consumer.position(tp) < end:
                return
        self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
