"""Where a backtest's decisions are computed: worker processes of each campaigns instance, at a lower CPU priority.

A backtest decides hundreds of thousands of changes (parsing each, its phone, its text): seconds of CPU that, in the
service's own event loop, the live consumer would wait behind. In worker processes niced below the services
(`BACKTEST_NICE`), the operating system gives the live path the CPU first and the backtest what is left. There are
`BACKTEST_WORKERS` of them (by default as many as the machine's cores, at most 4): each gets every chunk of lines
and decides the changes of its share of the customers (a hash of the customer's id), since everything one decision
depends on from earlier ones is per customer (the frequency cap) or per order (once per order), and an order is one
customer's. A worker tells whose a line is from its first bytes (`contracts.past_changes.customer_key_tsv`) and parses
only its own: parsing is a tenth of a decision's cost, and every worker parsing every line paid it once per worker.
Each keeps its `Replay` by backtest key; at the end their tallies are added up (`Tally.add`), which gives what one
replay of the whole stream gives (tests/test_backtest_reading.py). Backtests running at once share the workers chunk
by chunk.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
import zlib
from collections.abc import Awaitable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaigns.backtest_replay import Replay, Tally
from contracts.past_changes import customer_key_tsv, read_past_change_tsv

MAX_WORKERS = 4


@dataclass
class _Share:
    """A worker's part of one backtest: its replay, which customers are its (`index` of `count`), lines seen."""

    replay: Replay
    index: int
    count: int
    seen: int = 0


_shares: dict[str, _Share] = {}  # in a worker process: the backtests it is running


def _as_a_worker(nice: int, service: int) -> None:
    """A worker's set-up: it dies with its service, and it runs at a lower priority."""
    _die_with(service)
    _lower_priority(nice)


# prctl(2)'s option: a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with(service: int) -> None:
    """On Linux, killed when the service process (`service`, its parent) dies, however it dies: a worker waits for
    work for ever, and a service killed outright (SIGKILL, a crash, the bench's platforms stopped) left both of its
    workers running, 130-150 MB each. The signal comes when the thread that started the worker ends: the event
    loop's, which submits the work."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != service:  # it died already, before the signal was asked for
        os._exit(1)


def _lower_priority(nice: int) -> None:
    """Niced, and on Linux in the idle class too: it runs on a core only when nothing else wants it, so a backtest
    alone has the machine and live traffic has it first (niced only, two workers took a quarter of the live
    throughput in the bench)."""
    os.nice(nice)
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _start(key: str, replay: Replay, index: int, count: int) -> None:
    _shares[key] = _Share(replay, index, count)


def _feed(key: str, lines: bytes) -> tuple[int, datetime | None]:
    """Decide this worker's changes of `lines` (TSV lines, contracts.past_changes); how many it decided so far and
    when its last one was applied."""
    share = _shares[key]
    replay, last, count, index, seen = share.replay, None, share.count, share.index, share.seen
    for line in lines.split(b"\n"):
        if not line:
            continue
        position, seen = seen, seen + 1
        if count > 1 and zlib.crc32(customer_key_tsv(line)) % count != index:  # another worker's customer
            continue
        past = read_past_change_tsv(line)
        replay.decide(past, position)
        last = past.recorded_at
    share.seen = seen
    return replay.read, last


def _finish(key: str) -> Tally:
    return _shares.pop(key).replay.tally


def _drop(key: str) -> None:
    _shares.pop(key, None)


class ReplayWorker:
    """The service's handle on its worker processes, started on the first backtest and again after a crash."""

    def __init__(self, nice: int, workers: int | None = None) -> None:
        self._nice = nice
        self.count = workers or min(os.cpu_count() or 1, MAX_WORKERS)
        self._executors: list[ProcessPoolExecutor | None] = [None] * self.count

    def _pool(self, index: int) -> ProcessPoolExecutor:
        executor = self._executors[index]
        if executor is None:
            # spawn: a fork of a process running an event loop, threads and open connections is not safe. One
            # process per executor: a backtest's share stays in the process that holds its replay.
            context = multiprocessing.get_context("spawn")
            setup = (self._nice, os.getpid())
            executor = ProcessPoolExecutor(1, context, initializer=_as_a_worker, initargs=setup)
            self._executors[index] = executor
        return executor

    def _submit(self, index: int, function: Any, *arguments: Any) -> Awaitable[Any]:
        """`function` given to worker `index` now, behind what it was given before (one process: in order)."""
        try:
            submitted = asyncio.get_running_loop().run_in_executor(self._pool(index), function, *arguments)
        except BrokenProcessPool:
            self._executors[index] = None  # the next backtest starts a new worker
            raise
        return self._answer(index, submitted)

    async def _answer(self, index: int, submitted: Awaitable[Any]) -> Any:
        try:
            return await submitted
        except BrokenProcessPool:
            self._executors[index] = None
            raise

    async def _call(self, index: int, function: Any, *arguments: Any) -> Any:
        return await self._submit(index, function, *arguments)

    async def _each(self, function: Any, *arguments: Any) -> list[Any]:
        return await asyncio.gather(*(self._call(n, function, *arguments) for n in range(self.count)))

    async def start(self, key: str, replay: Replay) -> None:
        await asyncio.gather(*(self._call(n, _start, key, replay, n, self.count) for n in range(self.count)))

    def feed(self, key: str, lines: bytes) -> Awaitable[tuple[int, datetime | None]]:
        """Every worker is given `lines` now, behind the chunks given before, to decide its share; awaited: the
        changes decided so far, the latest one decided. A caller may give several chunks before awaiting the first
        answer (campaigns.backtest keeps a few in flight)."""
        return self._added_up([self._submit(n, _feed, key, lines) for n in range(self.count)])

    @staticmethod
    async def _added_up(submitted: list[Awaitable[tuple[int, datetime | None]]]) -> tuple[int, datetime | None]:
        answers = await asyncio.gather(*submitted)
        lasts = [last for _, last in answers if last is not None]
        return sum(int(read) for read, _ in answers), max(lasts, default=None)

    async def finish(self, key: str, replay: Replay, seconds: float) -> dict[str, Any]:
        """The result: the workers' tallies added up, reported by `replay` (the one the backtest prepared)."""
        tally = Tally()
        for part in await self._each(_finish, key):
            tally.add(part)
        return replay.result(seconds, tally).model_dump(mode="json")

    def drop(self, key: str) -> None:
        """Forget a cancelled backtest (after the chunk it may be deciding); nothing waits for it."""
        for executor in self._executors:
            if executor is not None:
                executor.submit(_drop, key)

    def stop(self) -> None:
        for n, executor in enumerate(self._executors):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
                self._executors[n] = None
