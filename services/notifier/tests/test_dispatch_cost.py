"""What the dispatcher costs the database when there is nothing to send (issue 34: a platform at rest)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import FastAPI

from notifier.app import create_app
from notifier.domain import MessageStatus
from notifier.repository import Dispatched, DispatchQueue, NewMessage, insert_messages
from notifier.sending import Sending
from notifier.settings import NotifierSettings
from servicekit.app import parts_of


async def test_an_idle_dispatcher_looks_for_due_messages_with_one_statement(
    notifier_settings: NotifierSettings,
) -> None:
    """The dispatcher looks for due messages every poll interval (retries, quiet hours): with nothing due that was a
    transaction, BEGIN, the locking read and COMMIT, every second of the day; now one read."""
    app = create_app(notifier_settings.model_copy(update={"dispatch_poll_interval_s": 60.0}))  # its own loop asleep
    statements: list[str] = []

    async def log_statements(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    async def keep_session(_: asyncpg.Connection) -> None:  # no reset statements between uses (as servicekit.db)
        pass

    async with app.router.lifespan_context(app):
        dispatcher = parts_of(app.state.runtime, Sending).dispatcher
        pool = await asyncpg.create_pool(
            notifier_settings.database_url, min_size=1, max_size=1, init=log_statements, reset=keep_session
        )
        assert pool is not None
        dispatcher.pool = pool
        try:
            await dispatcher.dispatch_due()  # asyncpg's own first statements on the connection go with this one
            statements.clear()
            assert await dispatcher.dispatch_due() == 0
        finally:
            dispatcher.pool = app.state.runtime.pool
            await pool.close()
    assert len(statements) == 1, statements


async def test_an_idle_dispatcher_looks_less_and_less_often_and_never_past_the_next_scheduled_message(
    kit: Any, notifier_app: FastAPI
) -> None:
    """At rest the dispatcher looked every second: a statement and a few wake-ups each time (issue 34). Its pauses
    now double while it finds nothing (up to `dispatch_idle_poll_s`, 5 s), but end when the earliest scheduled
    message comes due: without that, this one, due 4 s on, went out at the poll 6.2 s on."""
    later = kit.command(not_before=datetime.now(UTC) + timedelta(seconds=4))
    await kit.publish(later)
    await kit.wait_status(later.id, "scheduled")
    await kit.wait_status(later.id, "delivered", timeout_s=15)
    (row,) = await kit.rows("SELECT updated_at, not_before FROM messages WHERE send_sms_id = $1", later.id)
    assert timedelta(0) <= row["updated_at"] - row["not_before"] < timedelta(seconds=1.5)


async def test_the_queue_follows_a_message_and_its_status_changes_are_hot_updates(
    notifier_settings: NotifierSettings, notifier_app: FastAPI
) -> None:
    """The dispatcher's queue is a table of its own (`dispatch_queue`, kept by a trigger) so that no index of
    `messages` covers a column its status changes write: before, each of them rewrote all nine indexes (issue 34).
    One transaction, so PostgreSQL's per-transaction counters are exact."""
    message_id = str(uuid.uuid4())
    due, lease = datetime.now(UTC), datetime.now(UTC) + timedelta(minutes=5)
    conn = await asyncpg.connect(notifier_settings.database_url)
    try:
        async with conn.transaction():
            queue = DispatchQueue(conn)

            async def queued() -> list[tuple[bool, datetime]]:
                rows = await conn.fetch("SELECT sending, wake_at FROM dispatch_queue WHERE message_id = $1", message_id)
                return [(row["sending"], row["wake_at"]) for row in rows]

            await insert_messages(conn, [new_message(message_id, due)])
            assert await queued() == [(False, due)]
            await queue.start_attempts([(message_id, 1)], "console", lease, 7)
            assert await queued() == [(True, lease)]
            await queue.reschedule(message_id, due + timedelta(seconds=30))  # a retry
            assert await queued() == [(False, due + timedelta(seconds=30))]
            await queue.start_attempts([(message_id, 2)], "console", lease, 7)
            await queue.dispatch("console", [Dispatched(message_id, 2, "accepted", ["provider-id-1"])])
            assert await queued() == []
            await queue.end([(message_id, MessageStatus.DELIVERED, None, None)])
            counts = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated('messages'::regclass) AS updated, "
                "pg_stat_get_xact_tuples_hot_updated('messages'::regclass) AS hot"
            )
            assert counts is not None
            assert (counts["updated"], counts["hot"]) == (5, 5)
    finally:
        await conn.close()


def new_message(message_id: str, due: datetime) -> NewMessage:
    return NewMessage(
        message_id=message_id, partner_id="acme", send_sms_id=f"sms-{message_id}", campaign_id="campaign-1",
        order_id="order-1", customer_id="customer-1", phone="+79161234567", text="On its way", sender=None,
        transactional=False, encoding="gsm7", segments=1, status=MessageStatus.PENDING, failure_reason=None,
        failure_detail=None, requested_at=due, expires_at=due + timedelta(hours=1), not_before=None, due_at=due,
        correlation_id=None, command=b"{}", command_topic=None, command_partition=None, command_offset=None,
    )  # fmt: skip
