"""A replica of every partner's status definitions, read from the compacted registry topic.

Orders and campaigns keep one in memory. It reads the topic from the beginning without a
consumer group (every instance needs every definition), applies a definition only when its
version is newer than what it holds (so the relay's republishing and compaction order cannot
move it backwards), and sets `ready` once it has read up to the end offsets seen at start.

It follows its source or says it does not: should its consumer fail, `ready` is cleared and the
consumer is started again after a pause (reading the compacted topic again from the beginning, which
applies nothing twice), until it has caught up again.

`sync` gives read-your-writes across services: the registry answers a write only once its events are
on the topic, and a service that calls `sync` before deciding on a code reads the topic up to its end
offsets of that moment first, so it knows every definition the registry answered for before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from contracts.envelope import decode_any
from contracts.errors import ContractError
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import StatusDefinition
from servicekit.kafka import IDLE_CONSUMER, IDLE_FETCH_WAIT_MS, IDLE_POLL_MS, fetch_whole_assignment, topic_partitions

log = logging.getLogger(__name__)
STATUS_EVENTS = (StatusDefinitionArchived, StatusDefinitionUpserted)
Listener = Callable[[StatusDefinition], None]
Offsets = dict[TopicPartition, int]

CATALOG_RESTARTS = Counter("status_catalog_restarts_total", "Times the status catalog's consumer failed and restarted")
CATALOG_SYNC_TIMEOUTS = Counter(
    "status_catalog_sync_timeouts_total", "Requests that decided on the status catalog before it had caught up"
)


class StatusCatalog:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        client_id: str = "status-catalog",
        *,
        sync_timeout_s: float = 2.0,
        restart_delays_s: tuple[float, float] = (0.5, 10.0),
        fetch_max_wait_ms: int = IDLE_FETCH_WAIT_MS,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._sync_timeout_s = sync_timeout_s
        self._fetch_max_wait_ms = fetch_max_wait_ms  # how long a fetch waits on the broker for new records
        self._first_delay_s, self._last_delay_s = restart_delays_s
        self._by_partner: dict[str, dict[str, StatusDefinition]] = {}
        self._listeners: list[Listener] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The running consumer (None while it restarts), and how far it has read: set after every fetch.
        self._consumer: AIOKafkaConsumer | None = None
        # A second client that only asks for end offsets (`sync`). The broker answers one connection's requests in
        # order, so on the reading consumer's connection a ListOffsets waited behind its long-polling fetch (up to
        # fetch_max_wait_ms, 500 ms then, 5 s now): every REST write that syncs took half a second. Assigned nothing,
        # it never fetches, so it costs an idle connection, not wake-ups.
        self._offsets_client: AIOKafkaConsumer | None = None
        self._positions: Offsets = {}
        self._progress = asyncio.Event()  # replaced after every fetch: `sync` waits on it

    # --- reading -------------------------------------------------------------------------
    def get(self, partner_id: str, code: str) -> StatusDefinition | None:
        return self._by_partner.get(partner_id, {}).get(code)

    def of_partner(self, partner_id: str) -> list[StatusDefinition]:
        return list(self._by_partner.get(partner_id, {}).values())

    def on_change(self, listener: Listener) -> None:
        """Call `listener` with every definition applied from now on (e.g. to refresh an index)."""
        self._listeners.append(listener)

    async def sync(self, timeout_s: float | None = None) -> bool:
        """Wait until the replica has read the topic up to its end offsets of now (one ListOffsets request), so
        that it knows every definition the registry answered for before this call: call it before deciding that
        a code is unknown, archived or named so. Bounded by `timeout_s` (default: the catalog's
        `sync_timeout_s`); returns whether it caught up, and the caller decides on what it holds either way.
        Cheap when the replica is current: one round trip to the broker."""
        timeout = self._sync_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                ends = await self._end_offsets()
                while not self._has_read(ends):
                    await self._progress.wait()
            return True
        except (TimeoutError, KafkaError, OSError) as exc:
            CATALOG_SYNC_TIMEOUTS.inc()
            log.warning("status catalog: not caught up within %.1fs (%s); deciding on what it holds", timeout, exc)
            return False

    async def _end_offsets(self) -> Offsets:
        while (client := self._offsets_client) is None or self._consumer is None:  # restarting: the next one answers
            await self._progress.wait()
        ends: Offsets = await client.end_offsets(list(self._positions))
        return ends

    def _has_read(self, ends: Offsets) -> bool:
        return all(end == 0 or self._positions.get(tp, 0) >= end for tp, end in ends.items())

    # --- applying ------------------------------------------------------------------------
    def apply(self, definition: StatusDefinition) -> bool:
        """Keep `definition` when newer than the one held; returns whether it was applied."""
        codes = self._by_partner.setdefault(definition.partner_id, {})
        held = codes.get(definition.code)
        if held is not None and held.version >= definition.version:
            return False
        # Listeners first: should one fail, the definition is not kept, and the restarted consumer reads it again.
        for listener in self._listeners:
            listener(definition)
        codes[definition.code] = definition
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
        """Start reading; raises if the broker cannot be reached now (later failures restart the consumer)."""
        consumer, end_offsets = await self._connect()
        self._task = asyncio.create_task(self._run(consumer, end_offsets), name="status-catalog")

    async def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p) for p in await topic_partitions(self._bootstrap, self._topic)]

    def _new_consumer(self, client_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            consumer_timeout_ms=IDLE_CONSUMER["consumer_timeout_ms"],
        )

    async def _connect(self) -> tuple[AIOKafkaConsumer, Offsets]:
        consumer = self._new_consumer(self._client_id)
        await consumer.start()
        fetch_whole_assignment(consumer)
        try:
            partitions = await self._partitions()
            # The ends first: once assigned, the consumer's fetch waits on the broker (fetch_max_wait_ms) ahead of any
            # offsets request on the same connection, and every start would wait for it.
            end_offsets: Offsets = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            if self._offsets_client is None:
                offsets_client = self._new_consumer(f"{self._client_id}-offsets")
                await offsets_client.start()
                self._offsets_client = offsets_client
        except BaseException:
            await consumer.stop()
            raise
        return consumer, end_offsets

    async def _run(self, consumer: AIOKafkaConsumer, end_offsets: Offsets) -> None:
        """Consume; when the consumer fails, clear `ready` and start another after a pause that grows while the
        restarts fail before catching up."""
        delay = self._first_delay_s
        while True:
            try:
                await self._consume(consumer, end_offsets)
            except Exception:
                log.exception("status catalog: its consumer failed; restarting it")
            if self.ready.is_set():
                delay = self._first_delay_s
            self.ready.clear()
            CATALOG_RESTARTS.inc()
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._last_delay_s)
                try:
                    consumer, end_offsets = await self._connect()
                    break
                except Exception as exc:
                    log.warning("status catalog: could not restart its consumer (%s: %s)", type(exc).__name__, exc)

    async def _consume(self, consumer: AIOKafkaConsumer, end_offsets: Offsets) -> None:
        """Read until it fails (or is cancelled)."""
        self._positions = {tp: 0 for tp in end_offsets}
        self._consumer = consumer
        try:
            await self._record_progress(consumer, end_offsets)
            while True:
                batches = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self.apply_raw(record.value)
                await self._record_progress(consumer, end_offsets)
        finally:
            self._consumer = None
            self._wake_waiters()
            await consumer.stop()

    async def _record_progress(self, consumer: AIOKafkaConsumer, end_offsets: Offsets) -> None:
        for tp in self._positions:
            self._positions[tp] = await consumer.position(tp)
        if not self.ready.is_set() and self._has_read(end_offsets):
            self.ready.set()
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._offsets_client is not None:
            await self._offsets_client.stop()
            self._offsets_client = None
