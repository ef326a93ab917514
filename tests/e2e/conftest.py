from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.platform import SERVICES, Platform
from devtools.pytest_plugin import Infrastructure


@pytest.fixture
async def platform(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Platform]:
    """All four services running as processes; stopped and cleaned up after the test."""
    platform = Platform(infrastructure, tmp_path)
    await platform.create()
    try:
        for service in SERVICES:
            platform.start(service)
        await platform.wait_ready()
        yield platform
    finally:
        platform.stop_all()
        await platform.drop()
