"""An SMS's text: the variables a campaign's template may fill in, and how the text travels: its encoding (GSM-7 or
UCS-2), the characters that force UCS-2, and how many segments it costs. No I/O. The campaigns service renders and
bills with it; the console's editor counts with it as the marketer types.

GSM 03.38: the basic table costs one septet per character, the extension table two (an escape and the
character). One GSM-7 message holds 160 septets; a concatenated one 153 per segment (the user data
header takes the rest), and an escape pair is never split across segments. Any character outside both
tables makes the whole message UCS-2: 70 UTF-16 code units, 67 per segment when concatenated, and a
surrogate pair (an emoji) is never split either.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from contracts.sms import SmsEncoding

# What a campaign's template may use: what an `OrderStatusChanged` can fill (campaigns.templating checks it).
TEMPLATE_VARIABLES: tuple[str, ...] = (
    "customer.name",
    "order.id",
    "order.amount",
    "order.currency",
    "from_status.code",
    "from_status.name",
    "to_status.code",
    "to_status.name",
    "status_type",
)

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


class SmsParts(NamedTuple):  # a named tuple: immutable, and built in a third of a frozen dataclass's time
    encoding: SmsEncoding
    characters: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def _is_gsm7_character(char: str) -> bool:
    return char in GSM7_BASIC or char in GSM7_EXTENSION


def is_gsm7(text: str) -> bool:
    return all(_is_gsm7_character(c) for c in text)


def ucs2_forcing(text: str) -> list[str]:
    """The characters of `text` that GSM-7 cannot carry, each once, in the order they first appear: any one of them
    makes the whole message UCS-2."""
    return list(dict.fromkeys(c for c in text if not _is_gsm7_character(c)))


def _gsm7_cost(char: str) -> int:
    return 2 if char in GSM7_EXTENSION else 1


def _ucs2_cost(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _segments(costs: list[int], single: int, part: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:  # greedy fill: a multi-unit character moves whole to the next segment
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


_GSM7 = GSM7_BASIC | GSM7_EXTENSION
# One C-level scan each, stopping at the first hit: a Cyrillic text is told from its first letter.
_OUTSIDE_GSM7 = re.compile("[^" + re.escape("".join(sorted(_GSM7))) + "]")
_ESCAPED = re.compile("[" + re.escape("".join(sorted(GSM7_EXTENSION))) + "]")


def sms_parts(text: str) -> SmsParts:
    """The text's encoding, units and segments. Counted by C-level scans (`_OUTSIDE_GSM7`, `_ESCAPED`, `encode`: a
    backtest counts hundreds of thousands of texts); only a text of several segments with two-unit characters is
    filled character by character, as `_segments` does."""
    if _OUTSIDE_GSM7.search(text) is None:
        units = len(text) if _ESCAPED.search(text) is None else len(text) + len(_ESCAPED.findall(text))
        encoding, single, part, cost = SmsEncoding.GSM7, GSM7_SINGLE, GSM7_PART, _gsm7_cost
    else:
        units = len(text.encode("utf-16-le")) // 2
        encoding, single, part, cost = SmsEncoding.UCS2, UCS2_SINGLE, UCS2_PART, _ucs2_cost
    if units <= single:
        segments = 1 if units else 0
    elif units == len(text):  # every character one unit: the greedy fill is a division
        segments = -(-units // part)
    else:
        segments = _segments([cost(c) for c in text], single, part)
    return SmsParts(encoding, len(text), units, segments)
