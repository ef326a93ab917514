from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.platform import Platform, running
from devtools.pytest_plugin import Infrastructure


@pytest.fixture
async def platform(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Platform]:
    """All the services running as processes; stopped and cleaned up after the test."""
    async with running(infrastructure, tmp_path) as platform:
        yield platform
