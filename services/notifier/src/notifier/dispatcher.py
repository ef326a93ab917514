"""The dispatcher: sends due messages through the provider, and settles attempts a crash left open.

The exactly-once argument (see docs/notifier.md; intake's part is in `notifier.consumers`):

* dispatch: the attempt is recorded (`sending`, with a lease) and committed BEFORE the provider is called,
  and the outcome is recorded after (`notifier.outcomes`); a message is taken only from `scheduled`/`pending`,
  so no second attempt starts while one is in flight;
* restart: an attempt whose lease ran out without an outcome is reconciled with the provider
  (`Provider.lookup`): found -> dispatched without sending; never received -> sent; unknown -> resent only
  when the provider de-duplicates on the idempotency key, otherwise given up rather than risk a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter

from contracts.sms import SmsEncoding, SmsFailureReason
from notifier.domain import FailureKind, Message, replay_key
from notifier.events import Events
from notifier.limiter import SharedRateLimiter
from notifier.outcomes import OutcomeRecorder, SendOutcome, final_status, still_sending
from notifier.providers.base import Accepted, OutcomeUnknown, OutgoingSms, Provider, ProviderFailure
from notifier.repository import (
    Claimed,
    DispatchQueue,
    FinishedAttempt,
    hold_liveness_lock,
    release_liveness_lock,
)
from servicekit.batching import GroupCommit
from servicekit.db import DbConnection
from servicekit.outbox import unit_of_work
from servicekit.polling import IdlePolls
from servicekit.tracing import consume_span

log = logging.getLogger(__name__)

# Sends whose provider call is over wait for their outcome's transaction without holding a slot; all sends, calls
# and records together, are at most this many times `max_in_flight`, so that a database slower than the provider
# makes the dispatcher wait rather than pile up tasks.
SENDS_PER_SLOT = 8

SEND_ATTEMPTS = Counter("sms_send_attempts_total", "Provider calls by outcome", ["provider", "outcome"])


def outgoing(message: Message, default_sender: str) -> OutgoingSms:
    return OutgoingSms(
        idempotency_key=replay_key(message.send_sms_id, message.replay_round),
        message_id=message.message_id,
        phone=message.phone,
        text=message.text,
        sender=message.sender or default_sender,
        encoding=SmsEncoding(message.encoding),
        segments=message.segments,
    )


@dataclass
class Dispatcher:
    """Sends due messages through the provider, several at once, within the provider's rate limit."""

    pool: asyncpg.Pool
    provider: Provider
    events: Events
    outcomes: OutcomeRecorder
    limiter: SharedRateLimiter
    wake: asyncio.Event
    default_sender: str = "Notifier"
    max_in_flight: int = 32  # provider calls at once (their outcomes' records hold no slot: SENDS_PER_SLOT)
    lease_s: float = 300.0
    own_orphan_grace_s: float = 30.0
    poll_interval_s: float = 1.0
    # At rest the polls space out up to this (servicekit.polling), never past the next scheduled message.
    idle_poll_s: float = 5.0
    _in_flight: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # every send, until recorded
    _calling: set[str] = field(default_factory=set)  # sends whose provider call is not over: the slots taken
    _reserved: int = 0  # room taken by attempts recorded in an intake transaction not yet committed
    # Due messages may wait in the queue: the last round filled every slot, or the intake had no room.
    _backlog: bool = False
    # The earliest message still to come when the last look found none due: the pause ends there at the latest.
    _next_due: datetime | None = None
    _live: bool = False  # holding the liveness lock: only then may attempts carry this instance's id
    # This instance's id; it holds its liveness lock (`hold_liveness_lock`) for as long as it lives.
    instance_id: int = field(default_factory=lambda: secrets.randbelow(2**31 - 1) + 1)

    def __post_init__(self) -> None:
        # Outcomes of concurrent sends are recorded together: one transaction per group, not per SMS.
        self._recording: GroupCommit[SendOutcome] = GroupCommit(self.outcomes.record)
        self._polls = IdlePolls(self.poll_interval_s, self.idle_poll_s)

    async def run(self) -> None:
        async with self.pool.acquire() as liveness:
            # Held while this dispatcher runs, and released by PostgreSQL with the connection if the process dies,
            # so another dispatcher can tell our unfinished attempts from those of a live instance.
            await hold_liveness_lock(liveness, self.instance_id)
            self._live = True
            try:
                await self._loop()
            finally:
                self._live = False  # first: intake launches nothing from now on
                tasks = list(self._in_flight.values())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # The pool does not reset sessions (servicekit.db): give the lock back with the connection.
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await release_liveness_lock(liveness, self.instance_id)

    async def _loop(self) -> None:
        reconcile_at = 0.0
        while True:
            try:
                if time.monotonic() >= reconcile_at:  # orphans come from dead instances: once per poll is enough
                    await self.reconcile()
                    reconcile_at = time.monotonic() + self.poll_interval_s
                started = await self.dispatch_due()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("dispatcher: %s: %s; retrying", type(exc).__name__, exc)
                started = 0
            except Exception:  # a bug must not stop every future send; it is logged and retried
                log.exception("dispatcher: unexpected error; retrying")
                started = 0
            if started:
                self._polls.found()
            if started == 0 or self._free() <= 0:
                await self._sleep()

    async def _sleep(self) -> None:
        next_due, self._next_due = self._next_due, None
        await self._polls.wait(self.wake, None if next_due is None else (next_due - datetime.now(UTC)).total_seconds())

    async def dispatch_due(self) -> int:
        """Take due messages (as many as there are free slots), record their attempts, start the sends."""
        free = self._free()
        if free <= 0:
            return 0
        async with self.pool.acquire() as conn:
            # One statement, no transaction, when nothing is due: the dispatcher looks every poll, and at rest its
            # transaction (BEGIN, the locking read, COMMIT) was most of what the notifier cost PostgreSQL.
            next_due = await DispatchQueue(conn).next_due()
            if next_due is None or next_due > datetime.now(UTC):
                self._next_due = next_due
                self._backlog = False
                return 0
        # The intake may take some of this room meanwhile: MAX_IN_FLIGHT is a soft cap (the provider's rate
        # limit is the hard one), and holding the room here would send new messages the slow way.
        to_send = await self._take_due(free)
        self._reserved += len(to_send)
        self.launch(to_send)  # committed: every attempt exists before its provider call starts
        return len(to_send)

    async def _take_due(self, free: int) -> list[tuple[Claimed, int]]:
        """Due messages for up to `free` slots: those expired or opted out meanwhile end, the others' attempts
        are recorded (committed on return)."""
        now = datetime.now(UTC)
        async with unit_of_work(self.pool) as work:
            queue = DispatchQueue(work.conn)
            due = await queue.due(now, free)
            self._backlog = len(due) == free  # there may be more: new messages wait their turn behind them
            opted_out = await queue.opted_out((c.message.partner_id, c.message.phone) for c in due)
            ended: list[tuple[Claimed, SmsFailureReason, str]] = []
            to_send: list[tuple[Claimed, int]] = []
            for claimed in due:
                message = claimed.message
                if now >= message.expires_at:
                    ended.append((claimed, SmsFailureReason.EXPIRED, f"expired at {message.expires_at} before sending"))
                elif (message.partner_id, message.phone) in opted_out:
                    # The ledger may have changed while the message waited for quiet hours or a retry; an
                    # opt-out stops every message, transactional ones too (docs/notifier.md, consent).
                    ended.append((claimed, SmsFailureReason.OPTED_OUT, f"{message.phone} opted out before sending"))
                else:
                    to_send.append((claimed, message.attempts + 1))
            await queue.end(
                [(c.message.message_id, final_status(reason), str(reason), why) for c, reason, why in ended]
            )
            await queue.start_attempts(
                [(c.message.message_id, attempt) for c, attempt in to_send],
                self.provider.name,
                now + timedelta(seconds=self.lease_s),
                self.instance_id,
            )
            work.add(
                self.events.failed(c.message, c.correlation_id, reason, why, attempts=c.message.attempts)
                for c, reason, why in ended
            )
        return to_send

    def _free(self) -> int:
        """Room for new sends: a slot is held by a provider call, not by the wait for its outcome's transaction
        (at 1,000 events/s on the benchmark that wait took all 256 slots, and new messages queued behind it)."""
        calls = self.max_in_flight - len(self._calling)
        sends = self.max_in_flight * SENDS_PER_SLOT - len(self._in_flight)
        return min(calls, sends) - self._reserved

    async def start_in(self, conn: DbConnection, due: Sequence[Claimed]) -> list[tuple[Claimed, int]]:
        """Record the first attempts of messages just taken in (in the caller's transaction), as many as there
        is room for and only when no older message waits its turn; `launch` them once that committed."""
        if not self._live or self._backlog or not due:
            return []
        taken = [(claimed, claimed.message.attempts + 1) for claimed in due[: max(self._free(), 0)]]
        self._reserved += len(taken)
        try:
            await DispatchQueue(conn).start_attempts(
                [(c.message.message_id, attempt) for c, attempt in taken],
                self.provider.name,
                datetime.now(UTC) + timedelta(seconds=self.lease_s),
                self.instance_id,
            )
        except BaseException:
            self.release(taken)
            raise
        return taken

    def waiting(self) -> None:
        """Due messages wait in the queue: take them in order, as slots free up."""
        self._backlog = True

    def release(self, taken: Sequence[tuple[Claimed, int]]) -> None:
        """Give back the room `start_in` took, for attempts whose transaction did not commit."""
        self._reserved -= len(taken)

    def launch(self, started: Sequence[tuple[Claimed, int]]) -> None:
        """Start the sends of committed attempts (after the dispatcher stopped, they are left to reconciliation)."""
        self._reserved -= len(started)
        if not self._live:
            return
        for claimed, attempt in started:
            message_id = claimed.message.message_id
            task = asyncio.create_task(self._send(claimed, attempt), name=f"send-{message_id}")
            self._in_flight[message_id] = task
            self._calling.add(message_id)
            task.add_done_callback(functools.partial(self._done, message_id))

    def _done(self, message_id: str, task: asyncio.Task[None]) -> None:
        # Only this task's own entry: a retry of the message, once its outcome committed, may be under way already.
        if self._in_flight.get(message_id) is task:
            del self._in_flight[message_id]
            self._called(message_id)  # a task that died before or during its call frees its slot too
        if not task.cancelled() and task.exception() is not None:
            # The attempt stays `sending`; its lease runs out and reconciliation settles it.
            log.error("send task of %s died: %r", message_id, task.exception())

    def _called(self, message_id: str) -> None:
        """The provider call of a send is over (or its task ended): its slot is free."""
        self._calling.discard(message_id)
        if self._backlog:
            self.wake.set()  # room is free (now, not before) and messages wait for it

    async def _send(self, claimed: Claimed, attempt: int) -> None:
        # Sending comes later than intake, in the dispatcher: the stored traceparent keeps it in the order's trace.
        parent = [("traceparent", claimed.trace_parent.encode())] if claimed.trace_parent else []
        with consume_span("notifier send", parent, {"message_id": claimed.message.message_id}):
            await self._send_in_span(claimed, attempt)

    async def _send_in_span(self, claimed: Claimed, attempt: int) -> None:
        sms = outgoing(claimed.message, self.default_sender)
        try:
            try:
                async with self.limiter:
                    accepted = await self.provider.send(sms)
            finally:
                self._called(claimed.message.message_id)
        except ProviderFailure as failure:
            SEND_ATTEMPTS.labels(self.provider.name, str(failure.kind)).inc()
            await self._durably(SendOutcome(claimed, attempt, failure=failure))
        except Exception as exc:  # a provider bug or an unexpected error: the outcome is unknown
            log.exception("sending %s failed unexpectedly", sms.message_id)
            unknown = ProviderFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}")
            await self._durably(SendOutcome(claimed, attempt, failure=unknown))
        else:
            SEND_ATTEMPTS.labels(self.provider.name, "accepted").inc()
            await self._durably(SendOutcome(claimed, attempt, accepted=accepted))

    async def _durably(self, outcome: SendOutcome) -> None:
        """Record an outcome, with those of concurrent sends (one transaction for all); should the database stay
        away, the attempt stays `sending`, its lease runs out and reconciliation settles it."""
        try:
            await self._recording.submit(outcome)
        except (OSError, asyncpg.PostgresError) as exc:
            log.error("could not record the outcome of %s: %s; reconciliation will", outcome.message_id, exc)
        if outcome.failure is not None:
            # Its retry may come due before the dispatcher's idle pause ends: woken, the dispatcher reads when the
            # retry is due and sleeps only until then.
            self.wake.set()

    async def reconcile(self) -> int:
        """Settle attempts whose process died between recording them and recording their outcome, and our own
        whose outcome could not be recorded (they are no longer among our sends)."""
        now = datetime.now(UTC)
        own_before = now - timedelta(seconds=self.own_orphan_grace_s)
        async with self.pool.acquire() as conn:
            orphans = await DispatchQueue(conn).orphaned(now, 100, list(self._in_flight), self.instance_id, own_before)
        for claimed in orphans:
            await self._reconcile_one(claimed)
        return len(orphans)

    async def _reconcile_one(self, claimed: Claimed) -> None:
        message = claimed.message
        sms = outgoing(message, self.default_sender)
        try:
            found: Accepted | None = await self.provider.lookup(sms)
            unknown = False
        except OutcomeUnknown:
            found, unknown = None, True
        attempt = message.attempts
        if found is not None:
            log.info("reconciled %s: the provider has it; not sending again", message.message_id)
            await self.outcomes.record([SendOutcome(claimed, attempt, accepted=found, how="reconciled")])
            return
        async with unit_of_work(self.pool) as work:
            queue = DispatchQueue(work.conn)
            current = await queue.lock([message.message_id])
            if not still_sending(current.get(message.message_id), attempt):
                return
            if not unknown or self.provider.resend_is_safe:
                # Never received, or the provider de-duplicates on the idempotency key: sending again is safe.
                why = "the provider never received it" if not unknown else "resent under the same idempotency key"
                await queue.finish_attempts(
                    [FinishedAttempt(message.message_id, attempt, "unknown", f"reconciled: {why}")]
                )
                await queue.reschedule(message.message_id, datetime.now(UTC))
                log.info("reconciled %s: %s", message.message_id, why)
            else:
                detail = "outcome unknown after a crash and the provider cannot tell; not resent to avoid a duplicate"
                await queue.finish_attempts([FinishedAttempt(message.message_id, attempt, "unknown", detail)])
                work.add(await self.outcomes.give_up(queue, claimed, attempt, SmsFailureReason.PROVIDER_ERROR, detail))
        self.wake.set()
