"""devtools.launch: a module run as `__main__` in a process forked from the preloaded server answers as a
`subprocess.Popen` does (the end-to-end and browser tests run every service this way, and kill and restart them
there: tests/e2e/test_crash_safety.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.launch import PRELOADED_MODULES, start_preloaded
from devtools.platform import APPS


def test_every_service_is_preloaded() -> None:
    assert {f"{app.replace('-', '_')}.app" for app in APPS} <= set(PRELOADED_MODULES)


def test_a_preloaded_process_runs_the_module_as_main_into_its_log(tmp_path: Path) -> None:
    log = tmp_path / "this.log"
    process = start_preloaded("this", {"PATH": "/usr/bin"}, log)  # `import this` prints the Zen of Python
    assert process.wait(timeout=60) == 0
    assert process.poll() == 0 and process.returncode == 0
    assert "Beautiful is better than ugly." in log.read_text()


def test_a_process_left_running_is_killed_at_exit_instead_of_hanging_it(tmp_path: Path) -> None:
    # A script that starts a service and fails before stopping it: without the exit handler, multiprocessing's own
    # joins the service for ever. The script's service is the status registry, which runs until it is stopped.
    script = tmp_path / "leaves_one.py"
    script.write_text(
        "from pathlib import Path\n"
        "from devtools.launch import start_preloaded\n"
        "if __name__ == '__main__':\n"
        f"    log = Path({str(tmp_path / 'left.log')!r})\n"
        "    process = start_preloaded('status_registry', {'HTTP_PORT': '0'}, log)\n"
        "    print(process.pid, flush=True)\n"
        "    raise SystemExit('failed before stopping it')\n"
    )
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert "failed before stopping it" in finished.stderr
    pid = int(finished.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
