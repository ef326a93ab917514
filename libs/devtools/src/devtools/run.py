"""`make run`: start the platform's processes under honcho, wait until each is ready, play the example.

Only public interfaces are used to play the example (HTTP APIs with a partner token), exactly as an
integrator would. Ctrl-C stops the processes this command started; Kafka and PostgreSQL keep
running (`make infra-down` stops them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.scenario import DEMO_PARTNER, example_status_list
from servicekit.auth import issue_token
from servicekit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[4]
# name -> HTTP port, for every process of the Procfile.
SERVICES = {"status-registry": 8001}
READY_TIMEOUT_S = 60.0


def say(message: str) -> None:
    print(f"\033[1m[run]\033[0m {message}", flush=True)


def start_processes() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # Ctrl-C reaches us; we stop the whole group deliberately
    )


def wait_until_ready(processes: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = dict(SERVICES)
    while pending:
        if processes.poll() is not None:
            raise SystemExit(f"the services exited with code {processes.returncode}; see the log above")
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
        for name, port in list(pending.items()):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    say(f"{name} ready on http://127.0.0.1:{port} (docs: /docs, metrics: /metrics)")
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.3)


def play_example() -> None:
    token = issue_token(ServiceSettings(), DEMO_PARTNER)
    say(f"demo partner '{DEMO_PARTNER}', token: {token}")
    registry = httpx.Client(
        base_url=f"http://127.0.0.1:{SERVICES['status-registry']}", headers={"Authorization": f"Bearer {token}"}
    )
    result = registry.put("/v1/statuses", json={"statuses": example_status_list()}).raise_for_status().json()
    say(
        f"statuses synced: {len(result['created'])} created, {len(result['updated'])} updated, "
        f"{len(result['unchanged'])} unchanged"
    )
    for status in result["statuses"]:
        flags = " [initial]" if status["is_initial"] else ""
        flags += " [analytics]" if status["include_in_analytics"] else ""
        say(f"  {status['type']:<9} {status['code']:<18} {status['name']}{flags}")
    say("orders, campaigns and notifier are not built yet: the example stops at the status catalog")


def main() -> None:
    # SIGTERM (e.g. from a supervisor or `timeout`) stops the services like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    processes = start_processes()
    try:
        wait_until_ready(processes)
        play_example()
        say("running; Ctrl-C stops the services (make infra-down stops Kafka and PostgreSQL)")
        processes.wait()
    except KeyboardInterrupt:
        say("stopping")
    finally:
        if processes.poll() is None:
            os.killpg(processes.pid, signal.SIGTERM)
            try:
                processes.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(processes.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
