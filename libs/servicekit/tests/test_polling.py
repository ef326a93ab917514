"""The pauses of a polling loop at rest (servicekit.polling)."""

from __future__ import annotations

import asyncio
import time

from servicekit.polling import IdlePolls


async def test_the_pause_doubles_while_nothing_is_found_and_nothing_wakes_up_to_the_longest() -> None:
    polls, wake = IdlePolls(0.01, 0.05), asyncio.Event()
    pauses = []
    for _ in range(5):
        pauses.append(polls.pause_s)
        assert not await polls.wait(wake)
    assert pauses == [0.01, 0.02, 0.04, 0.05, 0.05]


async def test_found_work_or_a_wake_up_bring_the_pause_back_to_the_first() -> None:
    polls, wake = IdlePolls(0.01, 10.0), asyncio.Event()
    for _ in range(3):
        await polls.wait(wake)
    polls.found()
    assert polls.pause_s == 0.01
    for _ in range(3):
        await polls.wait(wake)
    wake.set()
    started = time.monotonic()
    assert await polls.wait(wake)
    assert time.monotonic() - started < 0.05 and not wake.is_set()  # at once, and cleared for the next wait
    assert polls.pause_s == 0.01


async def test_the_pause_ends_at_what_is_known_to_come_due() -> None:
    polls, wake = IdlePolls(10.0, 60.0), asyncio.Event()
    started = time.monotonic()
    assert not await polls.wait(wake, at_most_s=0.05)
    assert time.monotonic() - started < 1.0  # not the 10 s pause
    assert not await polls.wait(wake, at_most_s=-3.0)  # already due: no wait at all
