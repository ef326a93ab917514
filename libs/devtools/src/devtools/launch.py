"""How a platform starts one process of a service: `python -m <service>`, as production and the bench do, or a fork
of a server that has imported every service's code once, as the tests do.

Importing a service (FastAPI, pydantic, aiokafka, Liquid, phonenumbers...) costs about 1.6 s of CPU; a platform
starts seven processes and the suite starts about fifty platforms, on two cores. The forked process runs the same
`__main__` with the same environment, port, database and log file: a real process that can be killed with SIGKILL
and started again. The bench does not use it: a fork holds every service's modules, so its memory and the CPU of
its start would not be the service's own.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler (joining children) is registered before ours, so runs after it
import os
import runpy
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

# Every service's composition root: what its `__main__` imports before it reads its settings.
PRELOADED_MODULES = (
    "status_registry.app",
    "orders.app",
    "campaigns.app",
    "notifier.app",
    "identity.app",
    "webhooks.app",
    "console.app",
    "psycopg",  # yoyo's driver, imported when a service applies its migrations at start
)


class ServiceProcess(Protocol):
    """What a platform asks of a running service process (a `subprocess.Popen` offers it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def start_subprocess(module: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", module], env=dict(env), stdout=output, stderr=output)


class PreloadedProcess:
    """A service process forked from the preloaded server, with `subprocess.Popen`'s answers (the server reaps it
    and reports its exit status, a signal as its negative number)."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        assert self._process.pid is not None, "started in __init__'s caller"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"{self._process.name}", timeout or 0)
        return self._process.exitcode


def _forkserver() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # Read when the server starts (the first start of the session); later calls change nothing.
    context.set_forkserver_preload(list(PRELOADED_MODULES))
    return context


def _run_module(module: str, env: Mapping[str, str], log: str) -> None:
    """In the forked process: the environment, the log file on stdout and stderr, then the module as `__main__`."""
    os.environ.clear()
    os.environ.update(env)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    # Line-buffered, as PYTHONUNBUFFERED makes `python -m`: the log is read while the process runs, or after a kill.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stdout
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stderr
    runpy.run_module(module, run_name="__main__", alter_sys=True)


_started: list[multiprocessing.process.BaseProcess] = []


@atexit.register  # after multiprocessing.util's exit handler (imported above), so it runs before it
def _kill_the_left_over() -> None:
    """At exit multiprocessing joins every non-daemonic process it started: one a failed test left running would
    hang the run for ever. Killed instead (a `python -m` child would be left behind, orphaned)."""
    for process in _started:
        if process.exitcode is None:
            process.kill()
            process.join(10)


def start_preloaded(module: str, env: Mapping[str, str], log: Path) -> PreloadedProcess:
    # Not a daemon: a daemonic process may not start processes of its own (the campaigns' backtest worker).
    process = _forkserver().Process(target=_run_module, args=(module, dict(env), str(log)), name=module)
    process.start()
    _started[:] = [*(p for p in _started if p.exitcode is None), process]
    return PreloadedProcess(process)
