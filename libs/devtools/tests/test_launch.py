"""devtools.launch: a module run as `__main__` in a process forked from the preloaded server answers as a
`subprocess.Popen` does (the end-to-end and browser tests run every service this way, and kill and restart them
there: tests/e2e/test_crash_safety.py)."""

from __future__ import annotations

from pathlib import Path

from devtools.launch import PRELOADED_MODULES, start_preloaded
from devtools.platform import APPS


def test_every_service_is_preloaded() -> None:
    assert tuple(f"{app.replace('-', '_')}.app" for app in APPS) == PRELOADED_MODULES


def test_a_preloaded_process_runs_the_module_as_main_into_its_log(tmp_path: Path) -> None:
    log = tmp_path / "this.log"
    process = start_preloaded("this", {"PATH": "/usr/bin"}, log)  # `import this` prints the Zen of Python
    assert process.wait(timeout=60) == 0
    assert process.poll() == 0 and process.returncode == 0
    assert "Beautiful is better than ugly." in log.read_text()
