"""The process entrypoint every service shares (`servicekit.app.serve`)."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a child process: freezing the heap and changing the collector's thresholds are process-wide.
SERVE_WITH_STUBBED_SERVER = """
import gc, json, sys
import uvicorn
from fastapi import FastAPI
from servicekit.app import serve
from servicekit.settings import ServiceSettings

def report(app, **kwargs):
    json.dump({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count(), "port": kwargs["port"]}, sys.stdout)

uvicorn.run = report
serve(ServiceSettings(traces_exporter="none", http_port=8123), lambda settings: FastAPI())
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
