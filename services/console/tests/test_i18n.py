"""Every message of the console's code and templates has a Russian translation, and dates follow the user."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from console.i18n import LOCALE_DIR, Formats, negotiate, translations

CONSOLE = Path(__file__).resolve().parents[1]
KEYWORDS = {"_": None, "gettext": None, "N_": None}


def extracted() -> set[str]:
    with (CONSOLE / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)  # type: ignore[no-untyped-call]
    found = extract_from_dir(str(CONSOLE), method_map, options_map, keywords=KEYWORDS)
    return {message if isinstance(message, str) else message[0] for _, _, message, _, _ in found}


def test_every_message_has_a_russian_translation() -> None:
    with (LOCALE_DIR / "ru" / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale="ru")
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(extracted() - translated)
    assert not missing, f"untranslated (run `make console-messages`, then translate): {missing}"


def test_the_catalogue_compiles_and_translates() -> None:
    assert translations("ru").ugettext("Order statuses") == "Статусы заказов"
    assert translations("en").ugettext("Order statuses") == "Order statuses"


def test_dates_are_shown_in_the_users_time_zone_and_language() -> None:
    moment = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    assert "12:30" in Formats("ru", "Europe/Moscow").when(moment)
    assert "4:30" in Formats("en", "America/New_York").when(moment.isoformat())
    assert "дек" in Formats("ru", "Europe/Moscow").when(moment)


def test_status_names_in_the_users_language() -> None:
    status = {"code": "paid", "name": "Оплачен", "localized_names": {"en": "Paid"}}
    assert Formats("en", "UTC").status_name(status) == "Paid"
    assert Formats("ru", "UTC").status_name(status) == "Оплачен"


def test_the_browser_language_decides_before_sign_in() -> None:
    assert negotiate("ru-RU,ru;q=0.9,en;q=0.8", "en") == "ru"
    assert negotiate("de-DE", "en") == "en"
