"""The local provider: prints each SMS readably and appends it as a JSON line to a file.

The file is the provider's memory: `lookup` reads it after a crash, so an SMS that reached the file
is never written twice. It also "delivers" at once (a delivery report per message) so the whole
pipeline, receipts included, runs on a laptop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from notifier.domain import WHOLE_MESSAGE, ReceiptStatus
from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSink,
    OutgoingSms,
    Provider,
    ReportSink,
)
from servicekit.batching import GroupCommit


class ConsoleProvider(Provider):
    name = "console"

    def __init__(self, outbox_file: Path, *, auto_deliver: bool = True, echo: bool = True) -> None:
        self.outbox_file = outbox_file
        self._auto_deliver = auto_deliver
        self._echo = echo
        # Concurrent sends share one write and one fsync (and one write to the console); reports go to the sink
        # in batches.
        self._file_writes: GroupCommit[OutgoingSms] = GroupCommit(self._append_all)
        self._reports: GroupCommit[DeliveryReport] | None = None

    async def start(self, on_reports: ReportSink, on_inbound: InboundSink) -> None:
        self._reports = GroupCommit(on_reports)
        self.outbox_file.parent.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        await self._file_writes.close()
        if self._reports is not None:
            await self._reports.close()

    @staticmethod
    def provider_message_id(sms: OutgoingSms) -> str:
        return f"console-{sms.message_id}"

    async def send(self, sms: OutgoingSms) -> Accepted:
        await self._file_writes.submit(sms)
        accepted = Accepted((self.provider_message_id(sms),))
        if self._auto_deliver and self._reports is not None:
            # A local convenience: a lost report (logged) must not disturb sending, so nobody waits for it.
            pid = accepted.provider_message_ids[0]
            self._reports.add(DeliveryReport(pid, ReceiptStatus.DELIVERED, "delivered", WHOLE_MESSAGE))
        return accepted

    @staticmethod
    def readable(sms: OutgoingSms) -> str:
        plural = "s" if sms.segments > 1 else ""
        head = f"SMS to {sms.phone} from {sms.sender} [{sms.encoding}, {sms.segments} segment{plural}]"
        body = "\n".join(f"  | {line}" for line in sms.text.splitlines() or [""])
        return f"{head}\n{body}"

    def _line(self, sms: OutgoingSms, sent_at: str) -> str:
        line = {
            "id": sms.idempotency_key,
            "message_id": sms.message_id,
            "provider_message_id": self.provider_message_id(sms),
            "to": sms.phone,
            "from": sms.sender,
            "text": sms.text,
            "encoding": str(sms.encoding),
            "segments": sms.segments,
            "sent_at": sent_at,
        }
        return json.dumps(line, ensure_ascii=False)

    async def _append_all(self, group: Sequence[OutgoingSms]) -> None:
        sent_at = datetime.now(UTC).isoformat()
        await asyncio.to_thread(self._append, "".join(f"{self._line(sms, sent_at)}\n" for sms in group))
        if self._echo:  # after the fsync, as each SMS is sent: one write for the group
            sys.stdout.write("".join(f"{self.readable(sms)}\n" for sms in group))
            sys.stdout.flush()

    def _append(self, text: str) -> None:
        # fsync: a line is the proof that its SMS went out; a crash right after must still find it.
        with self.outbox_file.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    async def lookup(self, sms: OutgoingSms) -> Accepted | None:
        sent = await asyncio.to_thread(self.sent_ids)
        return Accepted((self.provider_message_id(sms),)) if sms.idempotency_key in sent else None

    def sent_ids(self) -> list[str]:
        if not self.outbox_file.exists():
            return []
        with self.outbox_file.open(encoding="utf-8") as handle:
            return [json.loads(line)["id"] for line in handle if line.strip()]

    def map_status(self, raw: str) -> ReceiptStatus:
        return ReceiptStatus(raw)
