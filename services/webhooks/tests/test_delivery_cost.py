"""What one delivery costs the dispatcher's process, where a test can show it without a clock."""

from __future__ import annotations

import sys

from httpcore._synchronization import current_async_library


async def test_httpcore_finds_the_event_loop_without_a_failing_import() -> None:
    # httpcore asks sniffio at every lock, event and shield of a request; without it installed each ask is an import
    # that fails after searching sys.path again (60 us here; 10 % of the dispatcher's CPU in the bench's profile).
    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules, "sniffio is missing: httpcore tries to import it at every call"
