"""The LISTEN/NOTIFY adapter: hears, on a connection of its own, every campaign write of every instance.

Campaign writes announce the campaign's id on `NOTIFY_CHANNEL` when they commit (see
`CampaignRepository.announce`). A notification sent while nobody listens is lost, so a `Listening` says
when its connection is gone: asyncpg's termination callback, and a probe every `check_interval_s` for a
connection that died without a word (a half-open socket). The index keeper then listens again and
reloads everything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "campaigns"  # payload: a campaign id; every instance reloads it into its index
OnCampaign = Callable[[str], None]
OnLost = Callable[[], None]


class Listening:
    """One connection listening on `NOTIFY_CHANNEL`; `on_lost` is called once it is gone."""

    def __init__(self, pool: asyncpg.Pool, conn: PoolConnectionProxy[asyncpg.Record], on_lost: OnLost) -> None:
        self._pool = pool
        self._conn = conn
        self._on_lost = on_lost
        self.lost = False

    @classmethod
    async def open(cls, pool: asyncpg.Pool, on_campaign: OnCampaign, on_lost: OnLost) -> Listening:
        conn = await pool.acquire()
        listening = cls(pool, conn, on_lost)
        try:
            conn.add_termination_listener(listening._terminated)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *args: on_campaign(str(args[3])))
        except BaseException:
            await listening.close()
            raise
        return listening

    def _terminated(self, *_: object) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost()

    async def probe(self, timeout_s: float) -> None:
        """Ask the connection something: one that died without a word is found out (`on_lost`)."""
        try:
            await self._conn.execute("SELECT 1", timeout=timeout_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("campaign listener: its connection does not answer (%s: %s)", type(exc).__name__, exc)
            self._terminated()

    async def close(self) -> None:
        """Closed, not handed back as it is: it listens (the pool opens a new connection when it needs one)."""
        self.lost = True  # on purpose: no `on_lost`
        # A connection the server ended may have gone back to the pool already: nothing is left to close.
        with contextlib.suppress(asyncpg.InterfaceError):
            self._conn.terminate()
            await self._pool.release(self._conn)
