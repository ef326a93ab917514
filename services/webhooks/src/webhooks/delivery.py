"""Sending the messages: claimed with a lease, signed, POSTed, the outcome recorded and the next try scheduled.

Each instance runs one `Dispatcher`. It claims due messages in PostgreSQL (`Deliveries.claim`: `FOR UPDATE SKIP
LOCKED` and a lease until `now + DELIVERY_LEASE_S`), so instances never send one message at the same time, and a
message whose instance died mid-delivery is claimed again once its lease expires, and sent with the same
`webhook-id`. Every claimed message is sent in a task of its own, and the dispatcher claims again as soon as one
finishes: there are no batches an endpoint could hold back. At most `DELIVERY_CONCURRENCY` requests are in flight
per instance and `DELIVERY_PER_ENDPOINT` per endpoint, each bounded by `DELIVERY_TIMEOUT_S` as a whole, reading at
most `RESPONSE_EXCERPT_BYTES` of the answer and following no redirect; so a slow or dead endpoint takes a few
slots and delays no other. A failed attempt pauses its endpoint (`domain.paused_until`, in the database, so for
every instance); the claims skip it meanwhile, then take one message as its probe: a dead endpoint is tried at that
pace, not as fast as it refuses connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram
from standardwebhooks.webhooks import Webhook

from servicekit.consumer import TRANSIENT_ERRORS
from servicekit.http import retry_after_seconds
from servicekit.polling import IdlePolls
from webhooks.domain import Clock, MessageState, Outcome, decide, paused_until
from webhooks.repository import AttemptRecord, Claimed, Deliveries
from webhooks.settings import WebhooksSettings
from webhooks.targets import TargetGuard, TargetRefused

log = logging.getLogger(__name__)

ATTEMPTS = MetricCounter("webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
LATENCY = Histogram("webhook_attempt_seconds", "Time of one webhook delivery attempt, answer excerpt included")
USER_AGENT = "order-status-platform-webhooks/1"


def signed_headers(message_id: str, payload: bytes, secrets: list[str], sent_at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: one signature per secret that signs now (two during a rotation)."""
    signatures = " ".join(Webhook(secret).sign(message_id, sent_at, payload) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@dataclass(frozen=True)
class Sender:
    """One attempt of one message."""

    client: httpx.AsyncClient
    guard: TargetGuard
    timeout_s: float
    excerpt_bytes: int

    async def send(self, message: Claimed) -> tuple[Outcome, str | None]:
        """The outcome and the start of the answer's body."""
        payload = message.payload.encode()
        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self.guard.check(message.url)
                # The timestamp the receiver checks against its own clock: the wall clock's, whatever schedules.
                headers = signed_headers(message.id, payload, message.secrets, datetime.now(UTC)) | target.headers
                request = self.client.build_request(
                    "POST", target.url, content=payload, headers=headers, extensions=target.extensions
                )
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = await self._excerpt(response)
                finally:
                    await response.aclose()
        except TargetRefused as exc:
            return Outcome(None, f"{exc.code}: {exc.detail}"), None
        except TimeoutError:
            return Outcome(None, f"timeout: no complete answer within {self.timeout_s:g} s"), None
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500]), None
        retry_after = retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC))
        return Outcome(response.status_code, None, retry_after), excerpt

    async def _excerpt(self, response: httpx.Response) -> str:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= self.excerpt_bytes:
                break
        return bytes(body[: self.excerpt_bytes]).decode("utf-8", "replace")


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: WebhooksSettings, clock: Clock, sender: Sender) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._sender = sender
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], str] = {}  # task -> endpoint id

    def wake(self) -> None:
        """New messages are due (the consumers made some, or the test moved the clock)."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.0
        polls = IdlePolls(self._settings.delivery_poll_interval_s, self._settings.delivery_idle_poll_s)
        while True:
            try:
                if await self._claim_and_start():
                    polls.found()
                backoff = 0.0
            except Exception as exc:  # a dispatcher that stopped would send nothing more: log, wait, claim again
                backoff = min(10.0, max(0.2, backoff * 2))
                transient = isinstance(exc, TRANSIENT_ERRORS)
                log.log(
                    logging.WARNING if transient else logging.ERROR,
                    "claiming webhook messages failed (%s: %s); again in %.1f s",
                    type(exc).__name__,
                    exc,
                    backoff,
                    exc_info=not transient,
                )
                await asyncio.sleep(backoff)
            await polls.wait(self._wake)

    async def stop(self) -> None:
        """Cancel what is in flight: those messages keep their lease, and are sent again once it expires."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim_and_start(self) -> bool:
        """Claim what may be sent now, within the free slots, and start sending it; whether anything was."""
        free = self._settings.delivery_concurrency - len(self._in_flight)
        if free <= 0:
            return False
        now = self._clock.now()
        busy = dict(Counter(self._in_flight.values()))
        async with self._pool.acquire() as conn:  # one statement, its own transaction: no BEGIN/COMMIT round trips
            claimed = await Deliveries(conn).claim(
                now,
                now + timedelta(seconds=self._settings.delivery_lease_s),
                free,
                self._settings.delivery_per_endpoint,
                busy,
            )
        for message in claimed:
            task = asyncio.create_task(self._deliver(message), name=f"webhook-{message.id}")
            self._in_flight[task] = message.endpoint_id
            task.add_done_callback(self._done)
        return bool(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()  # a slot is free: claim again at once
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a webhook failed", exc_info=task.exception())

    async def _deliver(self, message: Claimed) -> None:
        attempted_at = self._clock.now()
        started = time.monotonic()
        outcome, excerpt = await self._sender.send(message)
        latency = time.monotonic() - started
        LATENCY.observe(latency)
        ATTEMPTS.labels("success" if outcome.succeeded else "failure").inc()
        attempt = AttemptRecord(attempted_at, outcome.status, round(latency * 1000), excerpt, outcome.error)
        await self._record(message, outcome, attempt)

    async def _record(self, message: Claimed, outcome: Outcome, attempt: AttemptRecord) -> None:
        """The attempt, the message's next state and the endpoint's health, in one transaction; retried while the
        database is away (the lease keeps the message ours meanwhile, or it is sent again: at least once)."""
        settings = self._settings
        for pause in (0.2, 0.5, 1.0, 2.0, 5.0, None):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    deliveries = Deliveries(conn)
                    now = self._clock.now()
                    # A success ends any failure streak whatever it was: only a failure reads it (and locks it).
                    streak = None if outcome.succeeded else await deliveries.failing_since(message.endpoint_id)
                    decision = decide(
                        outcome,
                        message.attempts + 1,
                        now,
                        streak,
                        retry_after_cap=timedelta(seconds=settings.retry_after_cap_s),
                        disable_after=timedelta(seconds=settings.disable_after_failing_s),
                    )
                    resume_at = paused_until(
                        outcome,
                        now,
                        decision.failing_since,
                        first_pause=timedelta(seconds=settings.delivery_failing_pause_s),
                        longest_pause=timedelta(seconds=settings.delivery_failing_pause_max_s),
                        retry_after_cap=timedelta(seconds=settings.retry_after_cap_s),
                    )
                    await deliveries.record_attempt(
                        message,
                        attempt,
                        state=decision.state,
                        next_attempt_at=decision.next_attempt_at,
                        now=now,
                        failing_since=decision.failing_since,
                        paused_until=resume_at,
                        disable_reason=decision.disable_reason,
                        disable_cause=decision.disable_cause,
                    )
                if decision.disable_reason:
                    log.warning("endpoint %s disabled: %s", message.endpoint_id, decision.disable_reason)
                if decision.state is MessageState.FAILED:
                    log.info("webhook %s given up after %d attempts", message.id, message.attempts + 1)
                return
            except TRANSIENT_ERRORS as exc:
                if pause is None:
                    raise
                log.warning("recording webhook attempt %s failed (%s); again in %.1f s", message.id, exc, pause)
                await asyncio.sleep(pause)
