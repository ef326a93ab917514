"""What the dispatcher costs the database when there is nothing to send (issue 34: a platform at rest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import FastAPI

from notifier.app import create_app
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
