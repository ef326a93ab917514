"""The notifier's running parts, one object on the runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from notifier.consumers import Intake
from notifier.dispatcher import Dispatcher
from notifier.providers.base import Provider
from notifier.receipts import Receipts


@dataclass
class Sending:
    """What the notifier's start-up builds and its routes and shutdown need (`servicekit.app.parts_of`)."""

    provider: Provider
    receipts: Receipts
    dispatcher: Dispatcher
    intake: Intake
    dispatcher_task: asyncio.Task[None] | None = None
