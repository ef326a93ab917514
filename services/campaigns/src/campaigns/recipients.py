"""The recipient's side of an SMS: a sendable phone number, its time zone, and when quiet hours allow it. No I/O.

Upstream systems send phones as people type them (``8 (916) 123-45-67``); `phonenumbers` turns them into
E.164 with the partner's default region, and tells whether the number can receive SMS (mobile). The
recipient's time zone comes from the number too: a number whose region spans one zone gives it; when it
spans several (any Russian mobile number maps to 16 zones), the configured default zone is used, because
guessing the far end of the country would be wrong more often than the default.

A verdict through `phonenumbers`' own steps costs about 20 µs, and a backtest meets hundreds of thousands of numbers
once each, so it is kept cheap: a number already in E.164 form skips `parse`'s normalisation (`_e164_split`) and
is not cached (its verdict, about 5 µs, costs less than a cache's miss did); the type is computed once
(`is_valid_number` and `time_zones_for_number` each compute it again), by one regular expression per region, its
descriptions' checks in phonenumbers' order as alternatives (`_typing`), on what a country code's regions need
looked up once (`_country_code`). A number that needs `parse` is cached (`_parsed`).
tests/test_recipients.py compares the verdicts with `phonenumbers`' own steps over many numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated, NamedTuple
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberDesc,
    PhoneNumberType,
    national_significant_number,
    timezone,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

SMS_CAPABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


class Phone(NamedTuple):  # immutable, and cheaper to build than a frozen dataclass (a backtest builds many)
    e164: str
    time_zones: tuple[str, ...]


class PhoneProblem(Exception):
    """The customer's phone cannot receive an SMS; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sms_phone(raw: str | None, default_region: str) -> Phone:
    """The E.164 form of a phone that can receive SMS, else `PhoneProblem` (no_phone, invalid_phone, not_mobile)."""
    found = _checked(raw, default_region)
    if isinstance(found, Phone):
        return found
    raise PhoneProblem(*found)


def _checked(raw: str | None, default_region: str) -> Phone | tuple[str, str]:
    """A phone or (reason, detail). A number in E.164 form is checked every time: its check (about 5 µs) costs less
    than a cache's miss did in a backtest's hundreds of thousands of distinct numbers (a cache of them made a
    decision 2 µs dearer); one that needs phonenumbers' `parse` (about 20 µs) is cached (`_parsed`)."""
    if not raw or (split := _e164_split(raw)) is None:
        return _parsed(raw, default_region)
    return _verdict(raw, split, default_region)


@functools.lru_cache(maxsize=100_000)
def _parsed(raw: str | None, default_region: str) -> Phone | tuple[str, str]:
    """`_checked` of a number that is not plainly E.164. Cached: customers come back, and parsing is the dearest step
    of a decision."""
    if not raw or not raw.strip():
        return "no_phone", "the customer has no phone number"
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        return "invalid_phone", f"'{raw}' is not a phone number: {exc}"
    assert number.country_code is not None  # parse sets it on every number it returns
    return _verdict(raw, (number.country_code, national_significant_number(number)), default_region, number)


def _verdict(
    raw: str, split: tuple[int, str], default_region: str, number: PhoneNumber | None = None
) -> Phone | tuple[str, str]:
    """The verdict on a number of `split` (its country code and national number): `number`, parse's, or None when
    `raw` is a plus, the country code and the national number (E.164 as format_number writes it)."""
    kind = _type_of(*split)  # UNKNOWN exactly when is_valid_number is false (same region, metadata)
    if kind == PhoneNumberType.UNKNOWN:
        return "invalid_phone", f"'{raw}' is not a valid number (default region {default_region})"
    if kind not in SMS_CAPABLE:
        return "not_mobile", f"'{raw}' is not a mobile number"
    if number is None:
        return Phone(raw, _time_zones(split, kind))
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164, _time_zones(split, kind, number))


_E164_DIGITS = re.compile(r"\+([1-9][0-9]{2,19})")


def _e164_split(raw: str) -> tuple[int, str] | None:
    """The country code and the national number `phonenumbers.parse` finds in `raw` when it is a plus and digits
    whose national part parse keeps as it is; None for anything else (parse decides). parse would find the same
    country code (the shortest known prefix of at most 3 digits), and change the national part only by a leading
    zero (kept as "italian_leading_zero") or a national prefix it strips: both go to parse."""
    found = _E164_DIGITS.fullmatch(raw)
    if found is None:
        return None
    digits = found[1]
    country_code, length, national_prefix = _splits.get(digits[:3]) or _split_rule(digits[:3])
    national = digits[length:]
    if not length or national.startswith("0") or not 2 <= len(national) <= 17:
        return None
    if national_prefix is not None and national_prefix(national):
        return None
    return country_code, national


# By an E.164 number's first three digits: its country code, the code's length (0: parse does not know the code or
# its main region's metadata) and the match of the region's national prefix (None: it has none).
_splits: dict[str, tuple[int, int, Callable[[str], object] | None]] = {}


def _split_rule(first_digits: str) -> tuple[int, int, Callable[[str], object] | None]:
    rule: tuple[int, int, Callable[[str], object] | None] = (0, 0, None)
    for length in (1, 2, 3):  # the shortest known prefix
        country_code = int(first_digits[:length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
            if metadata is not None:
                rule = country_code, length, _starts_with(metadata.national_prefix_for_parsing)
            break
    _splits[first_digits] = rule
    return rule


def _starts_with(pattern: str | None) -> Callable[[str], object] | None:
    """A match at the start of a number: `str.startswith` for a pattern of digits only (most national prefixes,
    "8" or "0"), a fifth of a regular expression's call."""
    if not pattern:
        return None
    if pattern.isdigit():
        return lambda national: national.startswith(pattern)
    return _pattern(pattern).match


@functools.lru_cache(maxsize=1024)
def _pattern(source: str) -> re.Pattern[str]:
    return re.compile(source)


# phonenumbers' order of the special types (_number_type_helper): the first whose description matches is the type.
_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)
# A number description, compiled: its possible lengths (None: any, as the general description allows) and its
# national number pattern's fullmatch (None: no pattern, which matches nothing).
_Description = tuple[frozenset[int] | None, Callable[[str], object] | None] | None


def _compiled(description: PhoneNumberDesc | None) -> _Description:
    if description is None:
        return None
    lengths = frozenset(description.possible_length) if description.possible_length else None
    pattern = description.national_number_pattern
    return lengths, re.compile(pattern).fullmatch if pattern else None


def _alternative(description: PhoneNumberDesc | None) -> str | None:
    """`_is_number_matching_desc` of phonenumbers as a regular expression over the whole national number: the
    length is possible (a lookahead) and the pattern matches; None when nothing can match (no pattern)."""
    if description is None or not description.national_number_pattern:
        return None
    lengths = [n for n in description.possible_length or () if n > 0]
    if description.possible_length and not lengths:
        return None
    ahead = "(?=(?:" + "|".join(f".{{{n}}}" for n in lengths) + r")\Z)" if lengths else ""
    return f"{ahead}(?:{description.national_number_pattern})"


def _typing(metadata: PhoneMetadata) -> tuple[Callable[[str], re.Match[str] | None], dict[str, int]]:
    """One expression for `_number_type_helper`'s sequence of checks: the general description, then the first
    of the special types, the fixed line and the mobile descriptions that matches, whose group names its type.
    A regular expression's alternatives are tried in order, and `fullmatch` takes the first that spans the
    number: the type phonenumbers' checks one after the other give (tests/test_recipients.py), in one call."""
    ordered = [(getattr(metadata, name), kind) for name, kind in _SPECIAL_TYPES]
    ordered.append((metadata.fixed_line, PhoneNumberType.FIXED_LINE))
    if not metadata.same_mobile_and_fixed_line_pattern:  # else a number the fixed line misses is not typed mobile
        ordered.append((metadata.mobile, PhoneNumberType.MOBILE))
    kinds, alternatives = {}, []
    for description, kind in ordered:
        if (alternative := _alternative(description)) is not None:
            kinds[f"k{kind}"] = kind
            alternatives.append(f"(?P<k{kind}>{alternative})")
    general = _alternative(metadata.general_desc)
    if general is None or not alternatives:
        return re.compile("(?!)").fullmatch, kinds  # matches nothing: every number UNKNOWN
    return re.compile(f"(?={general}\\Z)(?:{'|'.join(alternatives)})").fullmatch, kinds


@dataclass(frozen=True)
class _Descriptions:
    """A region's number descriptions, compiled once per country code (`_country_code`; phonenumbers compiles or
    looks up each pattern per check)."""

    typed: Callable[[str], re.Match[str] | None]  # _typing's
    kinds: dict[str, int]
    mobile: _Description
    same_mobile_and_fixed_line_pattern: bool


def _descriptions_of(metadata: PhoneMetadata) -> _Descriptions:
    typed, kinds = _typing(metadata)
    return _Descriptions(typed, kinds, _compiled(metadata.mobile), bool(metadata.same_mobile_and_fixed_line_pattern))


def _matches(national: str, description: _Description) -> bool:
    """phonenumbers' _is_number_matching_desc: the length is possible and the whole number matches the pattern."""
    if description is None:
        return False
    lengths, fullmatch = description
    if lengths is not None and len(national) not in lengths:
        return False
    return fullmatch is not None and fullmatch(national) is not None


def _type_in(national: str, region: _Descriptions) -> int:
    """phonenumbers' _number_type_helper on the region's compiled descriptions (`_typing`)."""
    found = region.typed(national)
    if found is None:
        return PhoneNumberType.UNKNOWN
    kind = region.kinds[str(found.lastgroup)]
    if kind == PhoneNumberType.FIXED_LINE and (
        region.same_mobile_and_fixed_line_pattern or _matches(national, region.mobile)
    ):
        return PhoneNumberType.FIXED_LINE_OR_MOBILE
    return kind


def _number_type(number: PhoneNumber) -> int:
    """`phonenumbers.number_type`, in a third of the time (`_type_of`)."""
    assert number.country_code is not None  # parse sets it on every number it returns
    return _type_of(number.country_code, national_significant_number(number))


class _Candidate(NamedTuple):
    """One region of a country code shared by several: its code, its descriptions, and its leading digits' match
    (None: the region is told by typing the number in it)."""

    region: str
    descriptions: _Descriptions
    leading: Callable[[str], object] | None


class _CountryCode(NamedTuple):
    """What typing a number of one country code looks up, looked up once: the shared code's candidate regions in
    phonenumbers' order, and the descriptions of each region a number can end in (None: no metadata)."""

    candidates: tuple[_Candidate, ...]
    regions: dict[str, _Descriptions | None]


@functools.lru_cache(maxsize=1024)
def _country_code(country_code: int) -> _CountryCode:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    found: dict[str, _Descriptions | None] = {}
    candidates = []
    for region in regions:  # (a region shared by several codes is never the non-geographical 001)
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        if metadata is None:
            found[region] = None
            continue
        found[region] = descriptions = _descriptions_of(metadata)
        if len(regions) > 1:
            leading = _pattern(metadata.leading_digits).match if metadata.leading_digits is not None else None
            candidates.append(_Candidate(region, descriptions, leading))
    return _CountryCode(tuple(candidates), found)


def _type_of(country_code: int, national: str) -> int:
    """The type of the number of `country_code` whose national significant number is `national`, as
    `phonenumbers.number_type` finds it: its steps (the region, by typing the number in each of a shared country
    code's regions, then the type in the region's metadata) on descriptions compiled and looked up once per country
    code (`_country_code`), and a number whose region was found by typing it not typed again (the same metadata)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:  # no region: no metadata (phonenumbers looks the region None up, and finds nothing)
        return PhoneNumberType.UNKNOWN
    known = _country_code(country_code)
    region = regions[0] if len(regions) == 1 else None
    for candidate, descriptions, leading in known.candidates:
        if leading is not None:
            if leading(national):
                region = candidate
                break
        elif (kind := _type_in(national, descriptions)) != PhoneNumberType.UNKNOWN:
            return kind
    if region is None:
        return PhoneNumberType.UNKNOWN
    found = known.regions[region]
    return PhoneNumberType.UNKNOWN if found is None else _type_in(national, found)


def _time_zones(split: tuple[int, str], kind: int, number: PhoneNumber | None = None) -> tuple[str, ...]:
    """`timezone.time_zones_for_number` for a number whose type is known (it computes the type again): `split` is
    its country code and national number; `number`, parse's, when it was parsed (else the national number has no
    leading zero, and the number is built from `split` only if its zones depend on more than the country)."""
    country_code, national = split
    if not phonenumbers.is_number_type_geographical(kind, country_code):
        return _country_time_zones(country_code)
    number = number or PhoneNumber(country_code=country_code, national_number=int(national))
    return _known(timezone.time_zones_for_geographical_number(number))


@functools.lru_cache(maxsize=1024)
def _country_time_zones(country_code: int) -> tuple[str, ...]:
    """A non-geographical number's zones: its country code's (phonenumbers reads no more of the number)."""
    return _known(timezone._country_level_time_zones_for_number(PhoneNumber(country_code=country_code)))


@functools.lru_cache(maxsize=1024)
def _known(zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones without the unknown one (a few hundred distinct lists: every Russian mobile number has the same)."""
    return tuple(z for z in zones if z != timezone.UNKNOWN_TIMEZONE)


def recipient_zone(phone: Phone, default_zone: str) -> str:
    return phone.time_zones[0] if len(phone.time_zones) == 1 else default_zone


def _local(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local wall-clock time has no offset: the recipient's time zone applies")
    return value


LocalTime = Annotated[
    time,
    AfterValidator(_local),
    # JSON Schema's "time" format requires an offset, which a local time has none of.
    WithJsonSchema(
        {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$", "examples": ["09:00"]}
    ),
]
"""A wall-clock time in the recipient's time zone: HH:MM or HH:MM:SS."""


class SendWindow(BaseModel):
    """Local times between which SMS may be sent, e.g. 09:00-21:00; `end` before `start` spans midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: LocalTime
    end: LocalTime

    def allows(self, local: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def not_before(now: datetime, window: SendWindow | None, zone: str) -> datetime | None:
    """None when an SMS may go now; else the next instant the window opens in the recipient's zone."""
    if window is None:
        return None
    local = now.astimezone(ZoneInfo(zone))
    if window.allows(local.time()):  # (a datetime's time() has no tzinfo)
        return None
    opening = datetime.combine(local.date(), window.start, tzinfo=local.tzinfo)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), window.start, tzinfo=local.tzinfo)
    return opening.astimezone(now.tzinfo)
