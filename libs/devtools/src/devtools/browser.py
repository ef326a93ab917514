"""Debian's Chromium for the console's browser tests, driven by Playwright (which must never download a browser).

`python -m devtools.browser` (part of `make test`) finds /usr/bin/chromium or, as root, installs the Debian
package `chromium`, as `make infra-up` does for PostgreSQL; anything else fails loudly with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Run as root Chromium needs --no-sandbox; this machine's closed network refuses Chromium's background
# connections (component updates, sync, safe browsing), so they are switched off.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class BrowserMissing(RuntimeError):
    pass


def ensure_chromium() -> Path:
    if _works(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserMissing(f"{CHROMIUM} not found: install the Debian package chromium (or set CHROMIUM)")
    print("[browser] Chromium not found; installing the Debian package chromium (apt-get)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise BrowserMissing(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    if not _works(CHROMIUM):
        raise BrowserMissing(f"apt-get installed chromium, yet {CHROMIUM} does not start")
    return CHROMIUM


def _works(path: Path) -> bool:
    if not path.exists():
        return False
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False)
    return done.returncode == 0


def main() -> None:
    try:
        path = ensure_chromium()
    except BrowserMissing as exc:
        sys.exit(f"[browser] {exc}")
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"[browser] {version} at {path}")


if __name__ == "__main__":
    main()
