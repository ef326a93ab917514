"""Group commit: concurrent submits share flushes; a failed flush fails exactly the submits it held."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from servicekit.batching import GroupCommit


async def test_concurrent_submits_share_flushes_and_each_waits_for_its_own() -> None:
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> None:
        await asyncio.sleep(0.01)  # while this flush runs, the others gather
        flushed.append(list(items))

    commit = GroupCommit(flush)
    await asyncio.gather(*(commit.submit(i) for i in range(100)))
    assert sorted(i for batch in flushed for i in batch) == list(range(100))
    assert len(flushed) <= 3  # the first alone, then the rest together


async def test_a_lone_submit_is_flushed_at_once() -> None:
    flushed: list[list[str]] = []

    async def flush(items: Sequence[str]) -> None:
        flushed.append(list(items))

    commit = GroupCommit(flush)
    await asyncio.wait_for(commit.submit("only"), 1)
    assert flushed == [["only"]]


async def test_a_failed_flush_fails_its_submits_and_the_next_flush_goes_on() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database away")

    commit = GroupCommit(flush)
    with pytest.raises(RuntimeError, match="database away"):
        await commit.submit(1)
    await commit.submit(2)  # a later submit is flushed by a new flush
    assert calls == 2


async def test_batches_are_capped() -> None:
    sizes: list[int] = []
    gate = asyncio.Event()

    async def flush(items: Sequence[int]) -> None:
        await gate.wait()
        sizes.append(len(items))

    commit = GroupCommit(flush, max_batch=10)
    waiting = asyncio.gather(*(commit.submit(i) for i in range(25)))
    await asyncio.sleep(0)
    gate.set()
    await waiting
    assert sum(sizes) == 25 and max(sizes) <= 10


async def test_added_items_go_with_the_next_flush_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> None:
        flushed.append(list(items))
        if 13 in items:
            raise RuntimeError("unlucky")

    commit = GroupCommit(flush)
    commit.add(1)
    commit.add(2)
    await commit.close()
    assert flushed == [[1, 2]]
    commit.add(13)
    await commit.close()
    assert "flushing 1 items failed" in caplog.text
    await commit.submit(3)  # the group commit goes on
    assert flushed[-1] == [3]


async def test_a_caller_that_gives_up_does_not_stall_the_others() -> None:
    gate = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> None:
        await gate.wait()
        flushed.append(list(items))

    commit = GroupCommit(flush)
    impatient, patient = asyncio.create_task(commit.submit(1)), asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0.01)  # both are in the flush now
    impatient.cancel()  # gives up while its own flush runs
    gate.set()
    await asyncio.wait_for(patient, 1)
    await asyncio.wait_for(commit.submit(3), 1)  # and the group commit goes on
    assert flushed == [[1, 2], [3]]
