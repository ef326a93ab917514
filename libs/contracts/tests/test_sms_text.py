"""An SMS's text: which characters force UCS-2 (the campaigns service's billing is tested with its decisions)."""

from __future__ import annotations

import random

from contracts.sms import SmsEncoding
from contracts.sms_text import GSM7_BASIC, GSM7_EXTENSION, SmsParts, sms_parts, ucs2_forcing


def test_the_characters_that_force_ucs2_each_once_in_order() -> None:
    assert ucs2_forcing("Your order {{ order.id }} is on its way [€5 off]") == []  # the extension table is GSM-7
    assert ucs2_forcing("Привет, ёж! Ёж") == ["П", "р", "и", "в", "е", "т", "ё", "ж", "Ё"]
    assert ucs2_forcing("Hello, Анна 😍 Hello") == ["А", "н", "а", "😍"]


def test_one_forcing_character_makes_the_whole_text_ucs2() -> None:
    latin = "Your parcel is on its way" * 3
    assert sms_parts(latin).encoding == SmsEncoding.GSM7
    parts = sms_parts(latin + "ё")
    assert (parts.encoding, parts.units, parts.segments) == (SmsEncoding.UCS2, 76, 2)


def counted_one_by_one(text: str) -> SmsParts:
    """`sms_parts` as the definition says it: every character's cost, then the greedy fill."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        costs, encoding, single, part = [2 if c in GSM7_EXTENSION else 1 for c in text], SmsEncoding.GSM7, 160, 153
    else:
        costs, encoding, single, part = [2 if ord(c) > 0xFFFF else 1 for c in text], SmsEncoding.UCS2, 70, 67
    total, segments, used = sum(costs), 1, 0
    if total <= single:
        return SmsParts(encoding, len(text), total, 1 if total else 0)
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return SmsParts(encoding, len(text), total, segments)


def test_the_parts_of_many_texts_as_counted_character_by_character() -> None:
    rng = random.Random(32)
    alphabets = ("abc xyz", "abc{}€^", "Привет", "abc😀", "€😀й", "a")
    for _ in range(5000):
        alphabet = rng.choice(alphabets)
        length = rng.choice((rng.randrange(0, 400), rng.randrange(60, 75), rng.randrange(150, 165), 306, 307, 134))
        text = "".join(rng.choice(alphabet) for _ in range(length))
        assert sms_parts(text) == counted_one_by_one(text), text
