"""The console provider: the file is its memory, the console shows each SMS, receipts come at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from notifier.domain import ReceiptStatus, SmsEncoding
from notifier.providers.base import DeliveryReport, InboundSms, OutgoingSms
from notifier.providers.console import ConsoleProvider


def sms(n: int) -> OutgoingSms:
    return OutgoingSms(f"send-{n}", f"message-{n}", f"+7916111000{n}", f"Hello {n}\nsecond line", "Shop",
                       SmsEncoding.GSM7, 1)  # fmt: skip


async def test_concurrent_sends_are_all_written_shown_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports: list[DeliveryReport] = []

    async def on_reports(batch: Sequence[DeliveryReport]) -> None:
        reports.extend(batch)

    async def on_inbound(_: InboundSms) -> None:
        raise AssertionError("the console receives nothing")

    provider = ConsoleProvider(tmp_path / "sms.jsonl")
    await provider.start(on_reports, on_inbound)
    accepted = await asyncio.gather(*(provider.send(sms(n)) for n in range(1, 4)))
    await provider.stop()

    assert [a.provider_message_ids for a in accepted] == [(f"console-message-{n}",) for n in range(1, 4)]
    lines = [json.loads(line) for line in (tmp_path / "sms.jsonl").read_text().splitlines()]
    assert [(line["id"], line["to"], line["text"]) for line in lines] == [
        (f"send-{n}", f"+7916111000{n}", f"Hello {n}\nsecond line") for n in range(1, 4)
    ]
    assert provider.sent_ids() == ["send-1", "send-2", "send-3"]
    shown = capsys.readouterr().out
    for n in range(1, 4):
        assert f"SMS to +7916111000{n} from Shop [gsm7, 1 segment]\n  | Hello {n}\n  | second line\n" in shown
    assert {(r.provider_message_id, r.status) for r in reports} == {
        (f"console-message-{n}", ReceiptStatus.DELIVERED) for n in range(1, 4)
    }
