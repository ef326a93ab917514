"""The process entrypoint every service shares (`servicekit.app.serve`)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devtools.platform import free_port

# Run in a child process: freezing the heap and changing the collector's thresholds are process-wide.
SERVE_WITH_STUBBED_SERVER = """
import gc, json, sys
from fastapi import FastAPI
from servicekit.app import QuietServer, serve
from servicekit.settings import ServiceSettings

def report(server, sockets=None):
    state = {"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count(), "port": server.config.port}
    json.dump(state, sys.stdout)
    server.started = True

QuietServer.run = report
serve(ServiceSettings(traces_exporter="none", http_port=8123), lambda settings: FastAPI())
"""
SERVE = """
import sys
from fastapi import FastAPI
from servicekit.app import serve
from servicekit.settings import ServiceSettings

serve(ServiceSettings(traces_exporter="none", http_port=int(sys.argv[1])), lambda settings: FastAPI())
"""


def test_serve_freezes_the_start_up_heap_and_sets_the_collector_thresholds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_STUBBED_SERVER],
        env={"GC_THRESHOLDS": "[12345, 6, 7]", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    state = json.loads(done.stdout)
    assert state["thresholds"] == [12345, 6, 7]
    assert state["frozen"] > 10_000  # modules, classes and schemas imported at start-up
    assert state["port"] == 8123


def test_the_default_thresholds_collect_less_often_than_cpythons() -> None:
    from servicekit.settings import ServiceSettings

    young, middle, old = ServiceSettings().gc_thresholds
    assert young >= 10 * 700 and middle >= 10 and old >= 10


def _wake_ups(pid: int) -> int:
    """Voluntary context switches of the process's main thread (its event loop) so far: each is a sleep that ended
    in a wake-up. Not the involuntary ones: those are the thread preempted while it ran, as many as the machine's
    load makes them (CI saw 11 in 3 s of an idle server while the other tests ran beside it)."""
    lines = Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt"))


def test_an_idle_server_wakes_about_once_a_second_and_stops_at_once_on_a_signal() -> None:
    """uvicorn's server wakes ten times a second to look for a stop signal: a third of a service's wake-ups at rest
    (docs/performance.md, issue 34). `serve`'s ticks once a second (uvicorn refreshes the Date header) and a signal
    wakes it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], env={"PATH": ""}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.1)
        time.sleep(1)  # the connection's handling done
        before = _wake_ups(server.pid)
        time.sleep(3)
        assert _wake_ups(server.pid) - before <= 3 * 3  # uvicorn's own tick: 30 and more
        asked = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == -signal.SIGTERM  # shut down, then uvicorn raises the signal it captured
        assert time.monotonic() - asked < 3
    finally:
        server.kill()
        server.wait()
