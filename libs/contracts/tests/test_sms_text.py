"""An SMS's text: which characters force UCS-2 (the campaigns service's billing is tested with its decisions)."""

from __future__ import annotations

from contracts.sms import SmsEncoding
from contracts.sms_text import sms_parts, ucs2_forcing


def test_the_characters_that_force_ucs2_each_once_in_order() -> None:
    assert ucs2_forcing("Your order {{ order.id }} is on its way [€5 off]") == []  # the extension table is GSM-7
    assert ucs2_forcing("Привет, ёж! Ёж") == ["П", "р", "и", "в", "е", "т", "ё", "ж", "Ё"]
    assert ucs2_forcing("Hello, Анна 😍 Hello") == ["А", "н", "а", "😍"]


def test_one_forcing_character_makes_the_whole_text_ucs2() -> None:
    latin = "Your parcel is on its way" * 3
    assert sms_parts(latin).encoding == SmsEncoding.GSM7
    parts = sms_parts(latin + "ё")
    assert (parts.encoding, parts.units, parts.segments) == (SmsEncoding.UCS2, 76, 2)
