"""What one delivery costs the dispatcher's process, where a test can show it without a clock."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
import httpx
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from httpcore._synchronization import current_async_library

from devtools.pytest_plugin import wait_until
from servicekit.consumer import DeadLetters, Record, Rejected
from webhooks.consumers import SOURCES, events_processor
from webhooks.delivery import Dispatcher, Sender
from webhooks.repository import Deliveries, NewMessage
from webhooks.services import fan_out
from webhooks.settings import WebhooksSettings
from webhooks.targets import TargetGuard

from .conftest import Receiver, TestClock, create_endpoint, sms_failed, status_changed


async def test_httpcore_finds_the_event_loop_without_a_failing_import() -> None:
    # httpcore asks sniffio at every lock, event and shield of a request; without it installed each ask is an import
    # that fails after searching sys.path again (60 us here; 10 % of the dispatcher's CPU in the bench's profile).
    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules, "sniffio is missing: httpcore tries to import it at every call"


async def test_a_delivered_change_costs_one_claim_and_four_statements_to_record(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, receiver: Receiver
) -> None:
    """Every statement is a round trip to the database, and a delivery's were most of its cost (the throughput figure
    of docs/performance.md): the claim is one statement, and the record BEGIN, the attempt with the message's state
    and the endpoint's health, the release of the order's next change, COMMIT."""
    endpoint = (await create_endpoint(acme, f"{receiver.url}/hooks"))["id"]
    clock = TestClock()
    clock.advance(timedelta(hours=1))  # due in the app's dispatcher's future: only ours sends it
    first, counted = (
        NewMessage(
            id=f"msg_{order}",
            partner_id="acme",
            endpoint_id=endpoint,
            event_id=f"event-{order}",
            event_type="order.status_changed",
            order_id=order,
            sequence=1,
            payload="{}",
            next_attempt_at=clock.now(),
        )
        for order in ("o-1", "o-2")
    )
    statements: list[str] = []

    async def log_statements(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    async def keep_session(_: asyncpg.Connection) -> None:  # no reset statements between uses (as servicekit.db)
        pass

    pool = await asyncpg.create_pool(
        webhooks_settings.database_url, min_size=1, max_size=1, init=log_statements, reset=keep_session
    )
    assert pool is not None
    async with httpx.AsyncClient() as client:
        sender = Sender(client, TargetGuard(allow_private=True), 2.0, 1024)
        dispatcher = Dispatcher(pool, webhooks_settings, clock, sender)

        async def deliver(message: NewMessage, count: int) -> None:
            async with pool.acquire() as conn:
                await Deliveries(conn).insert_messages([message])
            statements.clear()
            await dispatcher._claim_and_start()
            await receiver.wait_for("/hooks", count)

            async def recorded() -> bool:
                return not dispatcher._in_flight

            await wait_until(recorded, what="the attempt recorded")

        try:
            await deliver(first, 1)  # asyncpg's own first statements on the connection (its types') go with this one
            await deliver(counted, 2)
        finally:
            await dispatcher.stop()
            await pool.close()
    assert len(statements) <= 5, statements


async def test_events_no_endpoint_wants_cost_one_read_and_claim_nothing(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, receiver: Receiver, clock: TestClock
) -> None:
    """Every batch of every consumer claimed its events and read the endpoints in a transaction: four statements,
    though most partners have no endpoint for most events (docs/performance.md, issue 34). A batch nobody wants is one
    read; what an endpoint wants is still claimed and made once, whenever it comes."""
    statements: list[str] = []

    async def log_statements(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    async def keep_session(_: asyncpg.Connection) -> None:  # no reset statements between uses (as servicekit.db)
        pass

    pool = await asyncpg.create_pool(
        webhooks_settings.database_url, min_size=1, max_size=1, init=log_statements, reset=keep_session
    )
    assert pool is not None
    consumer = "w"
    change, report = status_changed("o-1"), sms_failed("o-1")
    try:
        await fan_out(pool, consumer, [change], clock)  # asyncpg's own first statements on the connection
        statements.clear()
        assert await fan_out(pool, consumer, [change, report], clock) == 0  # acme has no endpoint yet
        assert len(statements) == 1, statements
        await create_endpoint(acme, f"{receiver.url}/hooks")  # wants order.status_changed only
        statements.clear()
        assert await fan_out(pool, consumer, [report], clock) == 0
        assert len(statements) == 1, statements
        assert await fan_out(pool, consumer, [change, report], clock) == 1
        assert await fan_out(pool, consumer, [change, report], clock) == 0  # delivered again: claimed
        async with pool.acquire() as conn:
            claimed = await conn.fetchval(
                "SELECT array_agg(event_id) FROM processed_events WHERE consumer = $1", consumer
            )
    finally:
        await pool.close()
    assert claimed == [change.id]  # the report no endpoint wants was never claimed


async def test_an_idle_dispatcher_looks_for_due_messages_less_and_less_often(
    webhooks_app: FastAPI, webhooks_settings: WebhooksSettings, clock: TestClock
) -> None:
    """Each look is a statement and a few wake-ups of the process: at rest the webhooks service woke ten times a
    second, four of them for the claims every 0.5 s, then once a second (docs/performance.md, issue 34). While its
    claims find nothing and nothing wakes it, the pause doubles up to `delivery_idle_poll_s`."""
    settings = webhooks_settings.model_copy(update={"delivery_poll_interval_s": 0.1, "delivery_idle_poll_s": 0.8})
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    assert pool is not None
    rounds = 0

    class Counted(Dispatcher):
        async def _claim_and_start(self) -> bool:
            nonlocal rounds
            rounds += 1
            return await super()._claim_and_start()

    async with httpx.AsyncClient() as client:
        dispatcher = Counted(pool, settings, clock, Sender(client, TargetGuard(allow_private=True), 2.0, 1024))
        running = asyncio.create_task(dispatcher.run())
        try:
            await asyncio.sleep(3.2)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await pool.close()
    assert rounds <= 9, rounds  # 0, 0.1, 0.3, 0.7, 1.5, 2.3, 3.1: 7 (every 0.1 s: 32)


class KeptDeadLetters(DeadLetters):
    """Dead letters kept here, not sent: what the consumer read and could not."""

    def __init__(self) -> None:
        self.rejected: list[Rejected] = []

    async def publish(self, rejected: Sequence[Rejected]) -> None:
        self.rejected.extend(rejected)


def unreadable(offset: int, partner: bytes | None) -> Record:
    headers = [("partnerid", partner)] if partner is not None else []
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", b"{not json", None, 1, 9, headers)


async def test_the_records_of_partners_without_an_endpoint_are_not_read(
    acme: httpx.AsyncClient, webhooks_settings: WebhooksSettings, receiver: Receiver, clock: TestClock
) -> None:
    """Parsing every event of the platform was most of what the service cost at full speed and at 100 events/s, though
    most partners have no endpoint (docs/performance.md, issue 34): a record whose `partnerid` header names a partner
    without an endpoint is not read, unless a record of the batch has no such header. Unreadable records show what was
    read."""
    await create_endpoint(acme, f"{receiver.url}/hooks")
    pool = await asyncpg.create_pool(webhooks_settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    dead_letters = KeptDeadLetters()
    process = events_processor(pool, SOURCES[0], dead_letters, clock, lambda: None)
    try:
        await process([unreadable(1, b"nobody"), unreadable(2, b"acme")])
        await process([unreadable(3, b"nobody"), unreadable(4, b"someone-else")])  # no one's endpoint: not a read
        await process([unreadable(5, b"nobody"), unreadable(6, None)])  # a record without the header: all are read
    finally:
        await pool.close()
    assert [(r.record.offset, r.reason) for r in dead_letters.rejected] == [
        (2, "malformed_json"),
        (5, "malformed_json"),
        (6, "malformed_json"),
    ]
