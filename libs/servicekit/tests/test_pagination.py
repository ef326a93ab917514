"""The one cursor codec and page rule of every list (servicekit.pagination): pure, no infrastructure."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from servicekit.errors import InvalidRequest
from servicekit.pagination import decode_cursor, encode_cursor, page_of


def test_a_cursor_gives_back_the_position_it_encodes_and_is_safe_in_a_url() -> None:
    cursor = encode_cursor("2026-12-01T12:00:00+00:00", "o/1 ?&=")
    assert cursor.isascii() and not set(cursor) & set("+/=?&")
    assert decode_cursor(cursor, str, str) == ("2026-12-01T12:00:00+00:00", "o/1 ?&=")
    assert decode_cursor(encode_cursor(3, 7, "x"), int, int, str) == (3, 7, "x")
    moment = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, "o-1"), datetime, str) == (moment, "o-1")


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        ("%%%", (int,)),  # not base64
        ("+79161234567", (str,)),  # a raw key, as some lists once handed out
        (_raw({"a": 1}), (int,)),  # not a list
        (_raw([1, 2]), (int,)),  # another length
        (_raw(["1"]), (int,)),  # another type
        (_raw([True]), (int,)),  # a bool is not a number here
        (_raw(["yesterday", "o-1"]), (datetime, str)),  # not a time
        (_raw(["2026-12-01T12:00:00", "o-1"]), (datetime, str)),  # a time without its offset
        (_raw([1764590400, "o-1"]), (datetime, str)),  # a time as a number
    ],
)
def test_a_malformed_cursor_is_a_422_naming_the_query_parameter(cursor: str, types: tuple[type, ...]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_cursor(cursor, *types)
    problem = refused.value
    assert (problem.status, problem.code) == (422, "validation_failed")
    ((location, field, kind),) = [(e.location, e.field, e.type) for e in problem.errors]
    assert (location, field, kind) == ("query", "cursor", "invalid_cursor")


def test_a_page_is_at_most_limit_rows_and_points_past_its_last_one_only_if_more_were_fetched() -> None:
    rows = [{"id": n} for n in range(1, 5)]
    page, next_cursor = page_of(rows, 3, lambda row: (row["id"],))
    assert page == rows[:3] and next_cursor is not None
    assert decode_cursor(next_cursor, int) == (3,)
    assert page_of(rows[:3], 3, lambda row: (row["id"],)) == (rows[:3], None)
    assert page_of([], 3, lambda row: (row["id"],)) == ([], None)
