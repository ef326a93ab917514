"""The backtest's worker processes (campaigns.backtest_worker) do not outlive their service."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# A service: it starts its two workers, says their process ids, and waits to be killed.
SERVICE = """
import asyncio
from campaigns.backtest_worker import ReplayWorker, _drop

async def main() -> None:
    worker = ReplayWorker(nice=0, workers=2)
    await worker._each(_drop, "nothing")  # the workers start with their first call
    print(*(pid for executor in worker._executors if executor for pid in executor._processes), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    """Running: its /proc entry exists and it is not a zombie (reaped or not, a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_workers_die_with_a_service_killed_outright() -> None:
    """A service killed with SIGKILL (a crash, a stopped platform) leaves no worker behind: they waited for work for
    ever, 130-150 MB each (sixteen were found after a few bench runs)."""
    service = subprocess.Popen([sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        service.kill()
        service.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]
