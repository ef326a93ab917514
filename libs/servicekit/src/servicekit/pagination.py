"""Cursor pages, one way for every list of every service: an opaque cursor that encodes the keyset position of the
last item shown, and the "fetch one more than the page" rule that says whether another page follows.

A list route decodes `cursor` with `decode_cursor` (a malformed one is the same 422 everywhere, naming the query
parameter), asks its repository for `limit + 1` rows after that position, and answers `page_of(rows, limit, key)`.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from servicekit.errors import FieldError, InvalidRequest

T = TypeVar("T")
KeyPart = str | int | datetime | uuid.UUID


def encode_cursor(*position: KeyPart) -> str:
    parts = [_text(part) for part in position]
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _text(part: KeyPart) -> str | int:
    if isinstance(part, datetime):
        return part.isoformat()
    return str(part) if isinstance(part, uuid.UUID) else part


def _part(value: Any, kind: type[Any]) -> Any:
    """One part of a position as `kind`: a datetime travels as ISO text with its offset (the query compares it), a
    uuid as its text."""
    if kind is uuid.UUID and isinstance(value, str):
        return uuid.UUID(value)
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a time without its offset")
        return moment
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ValueError("wrong types")


def decode_cursor(token: str, *types: type[Any]) -> tuple[Any, ...]:
    """The position `encode_cursor` wrote, each part checked against `types`; else a 422 naming `cursor`."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        return tuple(_part(value, kind) for value, kind in zip(values, types, strict=True))
    except (ValueError, TypeError) as exc:
        message = "malformed cursor; pass next_cursor as given"
        error = FieldError(location="query", field="cursor", message=message, type="invalid_cursor")
        raise InvalidRequest([error], detail=message) from exc


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], Sequence[KeyPart]]) -> tuple[list[T], str | None]:
    """The page (at most `limit` of `rows`, fetched as `limit + 1`) and the cursor of the next, None on the last."""
    page = list(rows[:limit])
    return page, encode_cursor(*key(page[-1])) if len(rows) > limit else None
