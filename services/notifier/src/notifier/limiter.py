"""The provider's rate limit, shared by every notifier instance through PostgreSQL.

Each instance used to keep its own limiter, so N instances sent at N times the provider's rate. Now the send
times of a provider account are handed out from one row (`send_rate`): an instance reserves the next few of them
in one update (a tenth of a second's worth), then each send waits for its own time. Whatever the number of
instances, the account's sends keep one every `1 / rate` seconds, after a burst of at most one second's worth
when the account was idle (as the per-process token bucket allowed). A reserved time still unused once the
reservation's span has passed is dropped, not used late, so an instance that went quiet cannot add a burst later;
unused times are capacity lost, never exceeded.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

import asyncpg

from notifier.repository import reserve_sends


class SharedRateLimiter:
    """`async with limiter:` waits for a send time of `account` that no other instance will use."""

    def __init__(
        self, pool: asyncpg.Pool, account: str, rate_per_s: float, *, burst_s: float = 1.0, reserve_s: float = 0.1
    ) -> None:
        self._pool = pool
        self._account = account
        self._interval_s = 1.0 / rate_per_s
        self._burst_s = burst_s
        # Sends reserved per round trip: the cost per SMS stays a fraction of an update at any rate.
        self._per_reservation = max(1, math.floor(rate_per_s * reserve_s))
        self._grace_s = self._per_reservation * self._interval_s
        # The reserved send times not used yet, on the event loop's clock: `_left` of them, one every interval from
        # `_next_at`; reserved at `_reserved_at`. Kept as a range, not a list: at 100,000/s a reservation is 10,000.
        self._next_at = 0.0
        self._left = 0
        self._reserved_at = 0.0
        # The reservation under way, which every send that found no time left waits for.
        self._reservation: asyncio.Future[None] | None = None
        self.reservations = 0

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def acquire(self) -> None:
        """Wait for this send's time: taken at once while reserved times are left; otherwise every send waiting
        shares one reservation, then takes its time in the order it came. (Under a lock taken by each send in
        turn, every send behind a reservation resumed in an event-loop round of its own: at 1,000 events/s on the
        benchmark 256 sends in flight waited 13-52 ms each for their turn; docs/performance.md, issue 34.)"""
        loop = asyncio.get_running_loop()
        while (at := self._next_time(loop.time())) is None:
            await asyncio.shield(self._reserving(loop))
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _reserving(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """The reservation under way, started if there is none (shielded: a send cancelled meanwhile does not
        cancel it for the others)."""
        if self._reservation is None or self._reservation.done():
            self._reservation = asyncio.ensure_future(self._reserve(loop))
        return self._reservation

    def _next_time(self, now: float) -> float | None:
        """The next reserved time, after dropping those stale by now: still unused a reservation's span after
        both their time and the reservation (a burst's times, in the past when reserved, are fresh then)."""
        oldest_fresh = now - self._grace_s
        if self._reserved_at < oldest_fresh and self._next_at < oldest_fresh:
            stale = math.ceil((oldest_fresh - self._next_at) / self._interval_s)
            dropped = min(self._left, stale)
            self._next_at += dropped * self._interval_s
            self._left -= dropped
        if not self._left:
            return None
        at = self._next_at
        self._next_at += self._interval_s
        self._left -= 1
        return at

    async def _reserve(self, loop: asyncio.AbstractEventLoop) -> None:
        async with self._pool.acquire() as conn:
            first = await reserve_sends(conn, self._account, self._per_reservation, self._interval_s, self._burst_s)
        self._reserved_at = loop.time()
        self._next_at = self._reserved_at + first
        self._left = self._per_reservation
        self.reservations += 1
