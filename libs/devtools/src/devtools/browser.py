"""Debian's Chromium for the console's browser tests, driven by Playwright (which must never download a browser).

`python -m devtools.browser` (part of `make test`) finds /usr/bin/chromium or, as root, installs the Debian
package `chromium`, as `make infra-up` does for PostgreSQL; anything else fails loudly with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.infra.processes import install_debian_package
from devtools.infra.settings import InfraError

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
    try:
        install_debian_package("chromium", f"{CHROMIUM} not found (or set CHROMIUM)")
    except InfraError as exc:
        raise BrowserMissing(str(exc)) from exc
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
