"""Where a backtest's decisions are computed: one worker process per campaigns instance, at a lower CPU priority.

A backtest decides hundreds of thousands of changes (parsing each, its phone, its text): seconds of CPU that, in the
service's own event loop, the live consumer would wait behind. In a worker process niced below the services
(`BACKTEST_NICE`), the operating system gives the live path the CPU first and the backtest what is left. The worker
keeps each running backtest's `Replay` by key; the service feeds it the orders stream a chunk of lines at a time.
One worker: backtests running at once share it chunk by chunk.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from campaigns.backtest_replay import Replay
from contracts.past_changes import read_past_change

_replays: dict[str, Replay] = {}  # in the worker process: the backtests it is running


def _lower_priority(nice: int) -> None:
    os.nice(nice)


def _start(key: str, replay: Replay) -> None:
    _replays[key] = replay


def _feed(key: str, lines: bytes) -> tuple[int, datetime | None]:
    """Decide every change of `lines` (NDJSON); how many were read so far and when the last one was applied."""
    replay = _replays[key]
    last = None
    for line in lines.split(b"\n"):
        if line:
            past = read_past_change(line)
            replay.decide(past)
            last = past.recorded_at
    return replay.read, last


def _finish(key: str, seconds: float) -> dict[str, Any]:
    return _replays.pop(key).result(seconds).model_dump(mode="json")


def _drop(key: str) -> None:
    _replays.pop(key, None)


class ReplayWorker:
    """The service's handle on its worker process, started on the first backtest and again after a crash."""

    def __init__(self, nice: int) -> None:
        self._nice = nice
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn: a fork of a process running an event loop, threads and open connections is not safe.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(1, context, initializer=_lower_priority, initargs=(self._nice,))
        return self._executor

    async def _call(self, function: Any, *arguments: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), function, *arguments)
        except BrokenProcessPool:
            self._executor = None  # the next backtest starts a new worker
            raise

    async def start(self, key: str, replay: Replay) -> None:
        await self._call(_start, key, replay)

    async def feed(self, key: str, lines: bytes) -> tuple[int, datetime | None]:
        read, last = await self._call(_feed, key, lines)
        return int(read), last

    async def finish(self, key: str, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(_finish, key, seconds)
        return result

    def drop(self, key: str) -> None:
        """Forget a cancelled backtest (after the chunk it may be deciding); nothing waits for it."""
        if self._executor is not None:
            self._executor.submit(_drop, key)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
