"""The pause of a loop that is woken for its work and polls only for what no wake-up announces.

The outbox relay, the notifier's and the webhooks' dispatchers are woken the moment their own process has work for
them; they poll for the rest (another instance's work, a retry or a scheduled message coming due, a lost wake-up).
Polling every second at rest cost each a statement, a database round trip and a few wake-ups a second, which a
platform at rest pays for (docs/performance.md, issue 34). So while polls find nothing and nothing wakes the loop,
each pause doubles from `first_s` up to `longest_s`; found work or a wake-up bring it back to `first_s`.
"""

from __future__ import annotations

import asyncio


class IdlePolls:
    """The pauses of one polling loop (see the module)."""

    def __init__(self, first_s: float, longest_s: float) -> None:
        self.first_s = first_s
        self.longest_s = max(longest_s, first_s)
        self.pause_s = first_s
        """The next pause, without a wake-up."""

    def found(self) -> None:
        """The last poll found work: the next pause is the shortest again."""
        self.pause_s = self.first_s

    async def wait(self, wake: asyncio.Event, at_most_s: float | None = None) -> bool:
        """Wait the pause (or `at_most_s`, when sooner: something known to come due), or until `wake` is set;
        whether it was. `wake` is cleared either way: what set it is looked at by the poll that follows."""
        timeout_s = self.pause_s if at_most_s is None else max(0.0, min(self.pause_s, at_most_s))
        try:
            await asyncio.wait_for(wake.wait(), timeout_s)
            woken = True
        except TimeoutError:
            woken = False
        finally:
            wake.clear()
        self.pause_s = self.first_s if woken else min(self.pause_s * 2, self.longest_s)
        return woken
