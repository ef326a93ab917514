"""Small process and file helpers: run a step, read pid files and logs, probe ports, lock the state folder."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from devtools.infra.settings import LOCALHOST, InfraError, InfraSettings

T = TypeVar("T")


def say(message: str) -> None:
    print(f"[infra] {message}", flush=True)


def run(cmd: Sequence[str], *, what: str, timeout: float = 600, stdin: str | None = None) -> str:
    """Run a command to completion; on failure raise InfraError naming the step and showing its output."""
    try:
        done = subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
        )
    except FileNotFoundError as exc:
        raise InfraError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{what}: no result after {timeout:.0f} s: {shlex.join(cmd)}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise InfraError(f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{tail_text(output)}")
    return done.stdout


def install_debian_package(package: str, missing: str) -> None:
    """As root with apt-get, install `package` (what the project needs and the machine lacks: the PostgreSQL
    server, Chromium); otherwise an InfraError that says what to install. `missing` says what was not found."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(f"{missing}: install the Debian package {package}")
    say(f"{missing}; installing the Debian package {package} (apt-get)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise InfraError(f"{shlex.join(cmd)} failed (exit {done.returncode}):\n{tail_text(done.stderr)}")


def tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = 40) -> str:
    """The end of a log for an error message; empty when there is no log or it is empty."""
    with contextlib.suppress(OSError):
        if text := path.read_text(errors="replace").strip():
            return f"--- last lines of {path} ---\n{tail_text(text, lines)}"
    return ""


def error_lines(path: Path, limit: int = 12) -> str:
    """The last ERROR/FATAL and `Caused by` lines of a Java log: the reason, without 40 lines of stack trace."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: no log ---"
    reasons = [line for line in lines if re.search(r"\b(ERROR|FATAL)\b|^Caused by:", line)]
    return f"--- errors in {path} ---\n" + "\n".join(reasons[-limit:] or lines[-limit:])


def process_alive(pid: int, needle: bytes) -> bool:
    """True if `pid` runs and its command line holds `needle` (a recycled pid of another program is not ours).

    An exited but not yet reaped process (zombie) has an empty command line, so it counts as gone.
    """
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_until_reaped(pid: int, timeout_s: float = 5.0) -> None:
    """Best effort: give init a moment to reap an exited server, so `ps` right after `down` shows nothing."""
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def read_pid(path: Path) -> int | None:
    """First line of a pid file (ours or PostgreSQL's postmaster.pid) as an int; None if absent or garbled."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """A TCP connect succeeds; necessary but not sufficient for a service to be ready."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (async fixtures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@contextlib.contextmanager
def state_lock(settings: InfraSettings) -> Iterator[None]:
    """Serialize `up`/`down` of one state folder: parallel test workers must not start two brokers."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / ".infra.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
