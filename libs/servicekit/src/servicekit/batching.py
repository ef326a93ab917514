"""Group commit: many concurrent callers, one flush (one transaction, one fsync) for all who are waiting.

A caller `submit`s an item and waits until a flush that included it has finished. While one flush runs,
new items gather; the next flush takes all of them. At low traffic every item is flushed at once, alone
(no added latency); under load the batches grow by themselves and the cost per item falls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Flush = Callable[[Sequence[Item]], Awaitable[None]]


class GroupCommit(Generic[Item]):
    """Batches concurrent `submit`s into calls of `flush`; a failed flush fails every submit it held."""

    def __init__(self, flush: Flush[Item], *, max_batch: int = 1000) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[None] | None]] = []  # no future: nobody waits
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> None:
        """Returns once `item` was flushed; raises what its flush raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._ensure_flushing()
        await future

    def add(self, item: Item) -> None:
        """Flush `item` with the next group without waiting for it; a failed flush is logged."""
        self._pending.append((item, None))
        self._ensure_flushing()

    def _ensure_flushing(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain(), name="group-commit")

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            error: BaseException | None = asyncio.CancelledError()  # unless the flush ends, one way or another
            try:
                await self._flush([item for item, _ in batch])
                error = None
            except Exception as exc:  # handed to every waiting caller, who decides what to do
                error = exc
                if any(future is None for _, future in batch):
                    log.exception("flushing %d items failed", len(batch))
            finally:
                _settle([future for _, future in batch], error)

    async def close(self) -> None:
        """Wait for the flush in progress (and what is already queued) to finish."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _settle(futures: list[asyncio.Future[None] | None], error: BaseException | None) -> None:
    """Answer every caller still waiting (one that gave up, e.g. cancelled, is skipped)."""
    for future in futures:
        if future is None or future.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)
