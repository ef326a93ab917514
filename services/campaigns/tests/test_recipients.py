"""The phone's verdict (campaigns.recipients) against `phonenumbers`' own steps, over many numbers of many countries:
the cheaper path (an E.164 number not re-normalised, the type computed once) must give the same verdict, E.164 form
and time zones as parse, is_valid_number, number_type, format_number and time_zones_for_number do."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberType, timezone

from campaigns.recipients import SMS_CAPABLE, Phone, _checked, _e164_split, _number_type, _parsed

REGIONS = (
    "RU", "KZ", "BY", "UA", "US", "CA", "GB", "IM", "DE", "FR", "IT", "SM", "VA", "ES", "BR", "AR", "MX", "IN", "CN",
    "JP", "AU", "NZ", "SG", "AE", "TR", "IL", "NL", "SE", "NO", "FI", "PL", "HU", "ID", "NG", "ZA", "EG", "KR", "VN",
)  # fmt: skip
TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.VOIP,
    PhoneNumberType.UAN,
)


def reference(raw: str | None, default_region: str) -> Phone | tuple[str, str]:
    """The verdict as phonenumbers' documented steps give it, one after the other."""
    if not raw or not raw.strip():
        return "no_phone", "the customer has no phone number"
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        return "invalid_phone", f"'{raw}' is not a phone number: {exc}"
    if not phonenumbers.is_valid_number(number):
        return "invalid_phone", f"'{raw}' is not a valid number (default region {default_region})"
    if phonenumbers.number_type(number) not in SMS_CAPABLE:
        return "not_mobile", f"'{raw}' is not a mobile number"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    zones = tuple(z for z in timezone.time_zones_for_number(number) if z != timezone.UNKNOWN_TIMEZONE)
    return Phone(e164, zones)


def numbers() -> list[str]:
    """Example numbers of each type of many regions and non-geographic codes, E.164 and national, each with
    neighbours: a digit changed, added or dropped; then random plus-and-digit strings and a few oddities."""
    rng = random.Random(32)
    examples = [phonenumbers.example_number_for_type(region, kind) for region in REGIONS for kind in TYPES]
    examples += [phonenumbers.example_number_for_non_geo_entity(code) for code in (800, 808, 870, 881, 882, 883, 979)]
    found: list[str] = []
    for example in filter(None, examples):
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
        found += [e164, national]
        digits = e164[1:]
        for _ in range(12):
            at = rng.randrange(1, len(digits))
            found.append("+" + digits[:at] + str(rng.randrange(10)) + digits[at + 1 :])
            found.append("+" + digits[:at] + str(rng.randrange(10)) + digits[at:])
            found.append("+" + digits[:at] + digits[at + 1 :])
        found.append("+" + digits[: rng.randrange(1, 4)] + "0" + digits[rng.randrange(1, 4) :])  # a leading zero
        found.append("+" + digits[:1] + "8" + digits[1:])  # a national prefix after the country code
    for _ in range(3000):
        found.append(
            "+" + str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(rng.randrange(2, 19)))
        )
    found += ["+79161234567", "+7 916 123-45-67", "89161234567", "+78001234567", "+7800", "+0123456789", "+1", "+"]
    found += ["+390612345678", "+3906123", "+12125550100", "+441632960000", "+80012345678", "", " ", "12345"]
    return found


NUMBERS = numbers()


@pytest.mark.parametrize("default_region", ["RU", "US", "DE"])
def test_each_verdict_is_phonenumbers_own(default_region: str) -> None:
    _parsed.cache_clear()
    differing = [raw for raw in NUMBERS if _checked(raw, default_region) != reference(raw, default_region)]
    assert not differing, differing[:20]
    verdicts = {type(_checked(raw, default_region)) for raw in NUMBERS}
    assert verdicts == {Phone, tuple}  # both kinds are compared


def test_the_type_is_phonenumbers_own() -> None:
    """`_number_type` (compiled descriptions, a shared country code's region typed once) against `number_type`, for
    every number parse reads, with either default region (countries of several regions among them: +1, +7, +44)."""
    compared = set()
    for raw in NUMBERS:
        for default_region in ("RU", "US"):
            try:
                number = phonenumbers.parse(raw, default_region)
            except NumberParseException:
                continue
            assert _number_type(number) == phonenumbers.number_type(number), (raw, default_region)
            compared.add(phonenumbers.number_type(number))
    assert {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.UNKNOWN} < compared


def test_an_e164_number_is_parsed_as_parse_would() -> None:
    """Whenever the shortcut answers, its number is parse's, field by field (leading zeros, national prefixes and
    unknown country codes go to parse)."""
    shortcuts = 0
    for raw in NUMBERS:
        split = _e164_split(raw)
        if split is None:
            continue
        shortcuts += 1
        country_code, national = split
        assert raw == f"+{country_code}{national}"  # E.164 as it is
        quick = PhoneNumber(country_code=country_code, national_number=int(national))
        assert quick == phonenumbers.parse(raw, "RU"), raw
        assert quick == phonenumbers.parse(raw, "US"), raw
    assert shortcuts > len(NUMBERS) // 2
