"""The shared rate limit against real PostgreSQL: reservations per batch of sends, none used late."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import notifier
from notifier.limiter import SharedRateLimiter
from servicekit.db import apply_migrations, create_pool


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database, Path(notifier.__file__).parent / "migrations")
    pool = await create_pool(database)
    yield pool
    await pool.close()


async def test_two_limiters_of_one_account_hand_out_each_time_once_and_reserve_per_batch(pool: asyncpg.Pool) -> None:
    first, second = (SharedRateLimiter(pool, "http", 100, burst_s=0) for _ in range(2))
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def send(limiter: SharedRateLimiter) -> None:
        await limiter.acquire()
        times.append(loop.time())

    started = loop.time()
    await asyncio.gather(*(send(limiter) for limiter in (first, second) for _ in range(20)))
    # 40 sends at 100/s with no burst: the last one 0.39 s after the first time, whichever instance sends it.
    assert loop.time() - started >= 0.35
    assert first.reservations == second.reservations == 2  # ten sends per update


async def test_times_left_unused_go_stale_and_are_not_used_late(pool: asyncpg.Pool) -> None:
    limiter = SharedRateLimiter(pool, "http", 100, burst_s=0)
    await limiter.acquire()  # reserves ten times, uses one
    await asyncio.sleep(0.5)  # the other nine passed long ago
    loop = asyncio.get_running_loop()
    before = loop.time()
    await limiter.acquire()
    assert limiter.reservations == 2  # a new reservation, not a time 0.4 s in the past
    async with pool.acquire() as conn:
        ahead = await conn.fetchval("SELECT extract(epoch FROM next_at - clock_timestamp()) FROM send_rate")
    assert ahead > 0 and loop.time() - before < 0.5


async def test_sends_behind_a_reservation_take_their_times_together_not_one_loop_round_each(
    pool: asyncpg.Pool,
) -> None:
    """Every send that found no time left waits for the same reservation, and once it is in they all go on in the
    same event-loop round (under a lock handed from send to send, each went on in a round of its own)."""
    limiter = SharedRateLimiter(pool, "http", 100_000)  # a reservation holds 10,000 times, the first ones a burst
    rounds = 0
    went_on_in: list[int] = []

    async def count_rounds() -> None:
        nonlocal rounds
        while True:
            await asyncio.sleep(0)
            rounds += 1

    async def send() -> None:
        await limiter.acquire()
        went_on_in.append(rounds)

    counter = asyncio.create_task(count_rounds())
    await asyncio.gather(*(send() for _ in range(300)))
    counter.cancel()
    assert limiter.reservations == 1
    assert len(set(went_on_in)) <= 2, sorted(set(went_on_in))[:10]
