"""English and Russian: gettext catalogues (Babel) for the templates and the code, dates in the user's zone.

The catalogues live as `locale/<language>/LC_MESSAGES/messages.po`, compiled in memory at start-up (no build
step, no compiled file to go stale). `make console-messages` extracts new msgids and merges them in.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations

from console.domain import LANGUAGES

LOCALE_DIR = Path(__file__).parent / "locale"


@cache
def translations(language: str) -> NullTranslations:
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if not po.exists():  # English is the source language: its msgids are the text
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate(accept_language: str | None, default: str) -> str:
    """The first of our languages the browser asks for (`Accept-Language`), else `default`."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return default


@dataclass(frozen=True)
class Formats:
    """How one user reads dates and numbers: their language and time zone."""

    language: str
    time_zone: str

    def when(self, value: datetime | str | None, format: str = "medium") -> str:
        if value is None or value == "":
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_datetime(moment, format=format, tzinfo=ZoneInfo(self.time_zone), locale=self.language)

    def day(self, value: date) -> str:
        """A calendar day in the user's language, e.g. "Jan 1, 1970" / "1 янв. 1970 г."."""
        return format_date(value, format="medium", locale=self.language)

    def number(self, value: float | int | None) -> str:
        return "" if value is None else format_decimal(value, locale=self.language)

    def percent(self, fraction: float) -> str:
        """A fraction (0 to 1) as a percentage in the user's language, e.g. "67%" / "67 %"."""
        return format_percent(fraction, locale=self.language)

    def duration(self, seconds: float) -> str:
        """A span of time in the user's language, e.g. "3 hours" / "3 часа"."""
        return format_timedelta(timedelta(seconds=seconds), locale=self.language, threshold=1.0)

    def status_name(self, status: dict[str, Any] | None) -> str:
        """A status's name in the user's language when it has one, else its name."""
        if not status:
            return ""
        localized: dict[str, str] = status.get("localized_names") or {}
        return localized.get(self.language) or str(status.get("name") or status.get("code") or "")

    def language_name(self, language: str) -> str:
        return str(Locale.parse(language).get_display_name(self.language) or language)
