"""The backtest: what a campaign (a draft, or a change to a stored one) would have sent over the last N days.

It replays the partner's real status changes into the trigger's statuses, read from the orders service over its
HTTP API (`GET /v1/status-changes`, as TSV: each change as orders published it, the order's statuses as they were
at that moment), in the order they were applied, and decides each with `domain.evaluate`, the live consumer's own
decision, at the moment the consumer would have taken it (the change's `recorded_at`). What earlier decisions mean
for the next one (once per order, the frequency cap) is kept in memory as the replay goes: `Replay`, no I/O.
Nothing is sent, nothing is stored.

What it cannot know is in docs/console.md ("The backtest"): the customer's phone, name, consent and the order's
amount are as they are now; opt-outs, consent changes and provider failures are the notifier's, after the decision.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import httpx

from campaigns.backtest_replay import Replay
from campaigns.backtest_worker import ReplayWorker
from campaigns.domain import CampaignDefinition, Policy, Reentry, cap_window_start
from campaigns.repository import CampaignRepository, fired_orders_before, marketing_sms_times
from contracts.past_changes import TSV
from servicekit.db import DbConnection
from servicekit.errors import ProblemError

MAX_DAYS = 90
PROGRESS_EVERY_S = 0.25
# Lines go to the workers this many bytes at a time (about 700 changes): few round trips, and a cancelled backtest
# stops after the chunks in hand.
CHUNK_BYTES = 256 * 1024
# Chunks given to the workers before the first of their answers is awaited: while the workers decide, this process
# reads on and orders' query runs on (awaiting each answer before reading the next chunk left the cores idle in
# turn: the workers waiting for lines, then the query waiting for the workers).
IN_FLIGHT = 3


class OrdersUnavailable(ProblemError):
    """503: the orders service, whose history the backtest replays, could not be read."""

    status = 503
    default_code = "orders_unavailable"


# --- the use case: read the past from orders, replay it, report as it goes -----------------------------------


@dataclass(frozen=True)
class Backtest:
    """One backtest of a partner's campaign definition; `run` yields progress lines, then the result."""

    partner_id: str
    definition: CampaignDefinition
    days: int
    policy: Policy
    orders: httpx.AsyncClient  # the orders API, with the caller's token
    clock: Callable[[], datetime]
    worker: ReplayWorker
    campaign_id: str | None = None  # a change to this stored campaign: its real history counts
    price_per_segment: Decimal | None = None

    async def prepare(self, conn: DbConnection) -> Replay:
        """The replay, with what the database says about before the period: the partner's settings, the orders the
        stored campaign sent for already (once per order), the other campaigns' marketing SMS (the cap)."""
        until = self.clock()
        since = until - timedelta(days=self.days)
        partner = await CampaignRepository(conn, self.partner_id).settings()
        replay = Replay(self.definition, partner, self.policy, since, until, price_per_segment=self.price_per_segment)
        if self.campaign_id and self.definition.reentry == Reentry.ONCE_PER_ORDER:
            replay.fired_orders = await fired_orders_before(conn, self.campaign_id, since)
        start = cap_window_start(since, partner)
        if start is not None and not self.definition.transactional:
            replay.ledger.others = await marketing_sms_times(conn, self.partner_id, self.campaign_id, start, until)
        return replay

    async def open(self, replay: Replay) -> httpx.Response:
        """The orders stream, opened (its status known) before the backtest answers: a refusal is the answer."""
        trigger = self.definition.trigger
        params = {
            "status_type": str(trigger.status_type),
            "to": sorted(trigger.to_codes),
            "since": replay.since.isoformat(),
            "until": replay.until.isoformat(),
        }
        # TSV: PostgreSQL writes it with a third less CPU than the JSON lines (contracts.past_changes).
        request = self.orders.build_request("GET", "/v1/status-changes", params=params, headers={"accept": TSV})
        try:
            response = await self.orders.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise OrdersUnavailable(f"the orders service could not be reached: {exc}") from exc
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:500]
            await response.aclose()
            raise OrdersUnavailable(f"the orders service answered {response.status_code}: {body}")
        return response

    async def run(self, replay: Replay, stream: httpx.Response) -> AsyncGenerator[dict[str, object]]:
        """Progress lines while replaying, then the result line. Closing the iterator (the caller went away or
        cancelled) closes the orders stream, which stops its query, and drops the replay from the worker."""
        started = time.monotonic()
        reported, key, finished, read = started, str(uuid.uuid4()), False, 0
        await self.worker.start(key, replay)
        try:
            async with aclosing(self._decided(key, stream)) as answers:
                async for read, last in answers:
                    if last is not None and (now := time.monotonic()) - reported >= PROGRESS_EVERY_S:
                        reported = now
                        yield {"progress": {"processed": read, "percent": replay.percent(last)}}
            yield {"progress": {"processed": read, "percent": 100.0}}
            result = await self.worker.finish(key, replay, time.monotonic() - started)
            finished = True
        except httpx.HTTPError as exc:
            raise OrdersUnavailable(f"the orders service's stream broke off: {exc}") from exc
        finally:
            await stream.aclose()
            if not finished:
                self.worker.drop(key)
        yield {"result": result}

    async def _decided(self, key: str, stream: httpx.Response) -> AsyncGenerator[tuple[int, datetime | None]]:
        """The workers' answers, chunk by chunk in order, with `IN_FLIGHT` chunks given ahead of the answer awaited;
        those not yet answered when it stops (cancelled, the stream broke off) are cancelled."""
        pending: deque[asyncio.Future[tuple[int, datetime | None]]] = deque()
        try:
            async for lines in _chunks(stream):
                pending.append(asyncio.ensure_future(self.worker.feed(key, lines)))
                if len(pending) == IN_FLIGHT:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for answer in pending:
                if answer.done() and not answer.cancelled():
                    answer.exception()  # a worker's failure after the backtest stopped: nobody is waiting for it
                answer.cancel()


async def _chunks(stream: httpx.Response) -> AsyncIterator[bytes]:
    """The stream in chunks of whole lines, about `CHUNK_BYTES` each. Gathered in a bytearray, which grows in place:
    adding each network read to a bytes copied everything gathered so far, every read."""
    pending = bytearray()
    async for chunk in stream.aiter_bytes():
        pending += chunk
        if len(pending) >= CHUNK_BYTES and (end := pending.rfind(b"\n")) >= 0:
            yield bytes(pending[: end + 1])
            del pending[: end + 1]
    if pending.strip():
        yield bytes(pending)
