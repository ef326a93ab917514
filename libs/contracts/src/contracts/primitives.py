"""Constrained field types shared by the contracts (identifiers, codes, money, phone numbers, timestamps).

Money is a `Decimal` on the Python side and a JSON *string* such as ``"1999.90"`` on the wire: a JSON number
is a binary float for most parsers (JavaScript, Java's double, jq...), so ``0.1 + 0.2`` style rounding would
creep into amounts that are summed in analytics. A JSON number is therefore rejected when reading, and
`Decimal` is always written in plain notation (never ``"1E+3"``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)

SLUG_PATTERN = r"^[a-z0-9_-]{1,64}$"
PARTNER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
E164_PATTERN = r"^\+[1-9]\d{6,14}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
LANGUAGE_TAG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
MONEY_PATTERN = r"^\d{1,18}(\.\d{1,6})?$"
_MONEY_RE = re.compile(MONEY_PATTERN)


# Instants outside these years are refused: PostgreSQL and asyncpg cannot round-trip the ends of Python's range
# (year 1 came back as a naive datetime.min), and no order event happens there.
EARLIEST_YEAR, LATEST_YEAR = 1900, 9000


# What pydantic would read as seconds since 1970 (`0.5`, `"1700000000"`): never meant as an instant here.
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    """Only RFC 3339 text names an instant: pydantic's lax mode would take a number (or a numeric string) as
    seconds since 1970, so `updated_to=0.5` meant half a second after the epoch instead of a refusal."""
    if isinstance(value, int | float | Decimal) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("an instant is RFC 3339 text such as 2026-01-31T09:30:00Z, not a number")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
        utc = None
    if utc is None or not EARLIEST_YEAR <= utc.year <= LATEST_YEAR:
        raise ValueError(f"the instant must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC (naive datetimes are rejected: their instant is unknown)."""

RequestDatetime = Annotated[UtcDatetime, BeforeValidator(_not_a_number)]
"""`UtcDatetime` where requests are validated in pydantic's lax mode (HTTP: bodies and query parameters), which
would take a number for seconds since 1970. Kafka's strict decoding refuses numbers by itself, and a validator
there would make strict mode refuse the text as well."""

PartnerId = Annotated[str, StringConstraints(pattern=PARTNER_ID_PATTERN)]
"""A partner (tenant) id. No ':' so that `{partner_id}:{...}` record keys stay unambiguous."""

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
"""A status code (or another machine code): lowercase latin letters, digits, '_' and '-'."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""An id issued by some system (order, customer, campaign, message): opaque, non-empty."""

DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")]
"""A human-readable name in any script, as the published events carry it (their released schemas fix this
pattern, so readers keep accepting what was written before `OneLineName`): 1-100 characters, no surrounding
whitespace."""

# One line of text: no control character (C0, DEL, C1: tab, CR, VT, U+001F, U+0085...) and no line or paragraph
# separator (U+2028, U+2029). Spelled out rather than written with \s and \S: JSON Schema's patterns follow
# JavaScript's regular expressions and pydantic's follow Rust's, whose \s differ (U+0085, U+FEFF), so a pattern
# with \s says one thing in the OpenAPI documents and does another in validation.
_LINE_BREAKING = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_BLANK = r" \xa0\u1680\u2000-\u200a\u202f\u205f\u3000\ufeff"
ONE_LINE_PATTERN = rf"^[^{_LINE_BREAKING}]*$"
ONE_LINE_NAME_PATTERN = rf"^[^{_LINE_BREAKING}{_BLANK}](?:[^{_LINE_BREAKING}]*[^{_LINE_BREAKING}{_BLANK}])?$"

OneLineName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=ONE_LINE_NAME_PATTERN)]
"""A name a client writes (a status's, a campaign's): 1-100 characters, one line (no control characters, no line
separators), no surrounding blank. Every `OneLineName` is a valid `DisplayName`."""

LanguageTag = Annotated[str, StringConstraints(pattern=LANGUAGE_TAG_PATTERN)]
"""A BCP 47 language tag such as ``en``, ``ru`` or ``pt-BR``."""

CurrencyCode = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
"""An ISO 4217 alphabetic code such as ``RUB``, ``EUR``."""

E164Phone = Annotated[str, StringConstraints(pattern=E164_PATTERN)]
"""A phone number in E.164 form: ``+`` then 7 to 15 digits, no spaces."""


def _money_from_json(value: Any, info: ValidationInfo) -> Any:
    if info.mode != "json":
        return value
    if not isinstance(value, str) or not _MONEY_RE.fullmatch(value):
        raise ValueError('money must be a JSON string in plain decimal notation such as "1999.90"')
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already guarantees a decimal
        raise ValueError(f"not a decimal: {value!r}") from exc


def _money_to_json(value: Decimal) -> str:
    return format(value.copy_abs() if value.is_zero() else value, "f")  # never "-0"


# The constraints come before the validator so that pydantic-core checks them natively on the Decimal; after it,
# pydantic falls back to Python validators that count digits (about three times slower for the whole type).
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=24, decimal_places=6),
    BeforeValidator(_money_from_json),
    PlainSerializer(_money_to_json, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "description": "non-negative decimal"}),
]
"""A non-negative amount: `Decimal` in Python, a plain-notation decimal string in JSON."""
