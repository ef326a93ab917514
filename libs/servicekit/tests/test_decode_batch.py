"""decode_batch: one way for every consumer to split a batch into what it can read and dead letters."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from contracts.envelope import Envelope, decode
from contracts.orders import OrderStatusChanged
from servicekit.consumer import Record, Unreadable, decode_batch


def record(value: bytes, offset: int) -> Record:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, len(b"k"), len(value), [])


def read(record: Record) -> Envelope[OrderStatusChanged]:
    if len(record.value or b"") > 100:
        raise Unreadable("oversized", f"{len(record.value or b'')} bytes")
    return decode(record.value or b"", OrderStatusChanged)


def test_a_batch_splits_into_what_was_read_and_dead_letters_with_reasons_in_order() -> None:
    records = [record(b"{not json", 0), record(b"{" + b" " * 200 + b"}", 1), record(b'{"specversion": "1.0"}', 2)]

    accepted, rejected = decode_batch(records, read)

    assert accepted == []
    assert [(r.record.offset, r.reason) for r in rejected] == [
        (0, "malformed_json"),
        (1, "oversized"),
        (2, "invalid_envelope"),
    ]
    assert rejected[1].detail == "202 bytes"


def test_records_that_read_keep_their_record_beside_what_was_made_of_them() -> None:
    accepted, rejected = decode_batch([record(b"7", 0), record(b"8", 1)], lambda r: int(r.value or b"0"))

    assert rejected == []
    assert [(r.offset, value) for r, value in accepted] == [(0, 7), (1, 8)]
