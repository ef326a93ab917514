"""The services' codes and developer messages in a marketer's words, each saying what to do about it: the reasons
a campaign did not send (the campaigns service's decision codes), why an SMS failed (the notifier's failure codes),
and a template's problems. The services keep their stable codes and English details for logs and the API; the
console translates what it shows. And what a campaign does, in one sentence; and how its text travels (encoding,
characters as billed, segments, and what forces UCS-2) as the marketer types it. All pure: no I/O."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.lists import format_list
from babel.numbers import format_decimal
from babel.units import format_unit

from console.domain import N_
from contracts.sms import SmsEncoding
from contracts.sms_text import sms_parts, ucs2_forcing

Gettext = Callable[..., str]

# Why a campaign did not send, or why an SMS failed: one sentence each, with the fix where there is one.
REASONS = {
    # the campaigns service's decisions
    "no_phone": N_("The customer has no phone number: it comes with the order from your shop."),
    "invalid_phone": N_("The phone number is not valid: correct it in your shop, with its country code (+7…)."),
    "not_mobile": N_("The phone number is not a mobile one, so it cannot get an SMS."),
    "no_sms_consent": N_("The customer has not agreed to SMS (your shop records the agreement with the order)."),
    "amount_below_min": N_("The order amount is below the condition's minimum."),
    "amount_above_max": N_("The order amount is above the condition's maximum."),
    "currency_mismatch": N_("The order is in another currency than the condition's."),
    "template": N_("The text template gives no text that can be sent for this order: correct the template."),
    "template_limit": N_("The text template is too complex for this order (too many loops or too long a text)."),
    "not_triggered": N_("This change of status does not start the campaign: check the trigger's statuses."),
    "once_per_order": N_("Already sent for this order: the campaign sends once per order."),
    "frequency_cap": N_("The customer got too many SMS lately: your frequency cap held this one back."),
    # the notifier's failures
    "no_consent": N_("The customer has not agreed to marketing SMS: only a transactional campaign may reach them."),
    "opted_out": N_("The number opted out of your SMS (Messages › Opt-outs): it gets none until the customer asks."),
    "expired": N_("Expired before it could be sent: it waited too long (quiet hours, or the provider was away)."),
    "provider_rejected": N_("The SMS provider refused it: check that the sender name is registered with them."),
    "provider_error": N_("The SMS provider failed to take it; the platform's operators see it. Nothing to do."),
    "undeliverable": N_("The mobile operator could not deliver it (the phone is off or out of reach)."),
}
STATUS_REASON = N_("The order's %(type)s status is not one the condition asks for.")
STATUS_TYPE_LABELS = {"general": N_("General"), "delivery": N_("Delivery"), "payment": N_("Payment")}


def reason(gettext: Gettext, code: str) -> str:
    """A decision's or a failure's code in words (an unknown, newer code as it is)."""
    if code in REASONS:
        return gettext(REASONS[code])
    status_type = code.removesuffix("_status")
    if status_type in STATUS_TYPE_LABELS:
        return gettext(STATUS_REASON, type=gettext(STATUS_TYPE_LABELS[status_type]))
    return code


# A template problem as the campaigns service words it (python-liquid's parser for syntax), then as a marketer reads it.
_UNKNOWN_VARIABLE = re.compile(r"unknown variable '(?P<name>[^']*)'; known: (?P<known>.*)")
_UNKNOWN_FILTER = re.compile(r"unknown filter '(?P<name>[^']*)'")
_EMPTY = re.compile(r"the template rendered an empty text")
_TOO_LONG = re.compile(r"the text has (?P<count>\d+) characters; at most (?P<limit>\d+)")
_LIMIT = re.compile(r"the template exceeds a limit")


def template_problem(gettext: Gettext, message: str, line: Any = None) -> str:
    """A template's problem in words, with the line it is on when there is one."""
    text = _template_words(gettext, message)
    return gettext("Line %(line)s: %(message)s", line=line, message=text) if line else text


def _template_words(gettext: Gettext, message: str) -> str:
    message = re.sub(r"^line \d+: ", "", message)
    if found := _UNKNOWN_VARIABLE.fullmatch(message):
        return gettext(
            "There is no variable “%(name)s”. You can use: %(known)s.", name=found["name"], known=found["known"]
        )
    if found := _UNKNOWN_FILTER.fullmatch(message):
        return gettext(
            "There is no filter “%(name)s”: check its spelling (for example default, upcase, downcase).",
            name=found["name"],
        )
    if _EMPTY.fullmatch(message):
        return gettext("The text comes out empty for this order: write some text outside the conditions.")
    if found := _TOO_LONG.fullmatch(message):
        return gettext(
            "The text comes out %(count)s characters long; an SMS may have at most %(limit)s. Shorten it.",
            count=found["count"],
            limit=found["limit"],
        )
    if _LIMIT.match(message):
        return gettext("The template is too complex to render: simplify its loops and conditions.")
    return gettext(
        "The template's markup is broken here (%(detail)s): each {{ needs its }}, each {%% if %%} its {%% endif %%}.",
        detail=message,
    )


# --- the SMS text as typed: how it travels ------------------------------------------------------------------------

ENCODING_NAMES = {SmsEncoding.GSM7: "GSM-7", SmsEncoding.UCS2: "UCS-2"}
FORCING_SHOWN = 3  # the first few characters that force UCS-2: a Russian text has dozens


@dataclass(frozen=True)
class TextCount:
    """What the editor shows beside the text box: the encoding, characters as billed (GSM-7 septets or UCS-2 code
    units), segments, and which characters forced UCS-2, in words (None for GSM-7)."""

    encoding: str
    characters: int
    segments: int
    forcing: str | None


def text_count(gettext: Gettext, text: str) -> TextCount:
    parts = sms_parts(text)
    forcing = ucs2_forcing(text)
    return TextCount(ENCODING_NAMES[parts.encoding], parts.units, parts.segments, _forcing_words(gettext, forcing))


def _forcing_words(gettext: Gettext, forcing: list[str]) -> str | None:
    if not forcing:
        return None
    shown = ", ".join(_visible(char) for char in forcing[:FORCING_SHOWN])
    if len(forcing) == 1:
        return gettext("%(character)s needs UCS-2", character=shown)
    if len(forcing) <= FORCING_SHOWN:
        return gettext("%(characters)s need UCS-2", characters=shown)
    return gettext("%(characters)s and others need UCS-2", characters=shown)


def _visible(char: str) -> str:
    """A character as the marketer can find it in the text: itself in quotes, or, when it cannot be seen (a no-break
    space or a tab pasted from a document), its code point and name."""
    if unicodedata.category(char)[0] in "ZC":
        return f"U+{ord(char):04X} {unicodedata.name(char, '').lower()}".rstrip()
    return f"«{char}»"


# --- what a campaign does, in one sentence ------------------------------------------------------------------------

# "When the delivery status changes to Shipped and the payment status is Paid, send an SMS from DemoShop, once per
# order." Built from the campaigns API's definition: its trigger, filters, sender and re-entry, statuses by name.
TYPE_WORDS = {
    "general": N_("the order status"),
    "delivery": N_("the delivery status"),
    "payment": N_("the payment status"),
}
TRIGGER_WORDS = {
    "any": N_("When %(type)s changes to %(to)s"),
    "listed": N_("When %(type)s changes from %(from)s to %(to)s"),
}
# From none: the order's first status of the type (Russian says it with the type in another case, so one per type).
FIRST_STATUS_WORDS = {
    "general": N_("When an order's first status is %(to)s"),
    "delivery": N_("When an order's first delivery status is %(to)s"),
    "payment": N_("When an order's first payment status is %(to)s"),
}
REENTRY_WORDS = {"once_per_order": N_("once per order"), "every_time": N_("every time the change happens")}
NOT_CHOSEN = "…"


def summary(gettext: Gettext, language: str, campaign: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """The campaign (a CampaignDefinition as the API has it) in one sentence of the user's language; `names` are the
    statuses' names in that language by code."""
    statuses = _Statuses(gettext, language, names)
    clauses = [_trigger(gettext, campaign["trigger"], statuses)]
    clauses += [_condition(gettext, language, condition, statuses) for condition in campaign.get("filters", [])]
    reentry = str(campaign.get("reentry", "once_per_order"))
    reentry_words = gettext(REENTRY_WORDS[reentry]) if reentry in REENTRY_WORDS else reentry
    if campaign.get("steps"):
        return _journey(gettext, language, campaign, statuses, format_list(clauses, locale=language), reentry_words)
    return gettext(
        "%(when)s, %(send)s, %(reentry)s.",
        when=format_list(clauses, locale=language),
        send=_send(gettext, campaign.get("sender")),
        reentry=reentry_words,
    )


def _send(gettext: Gettext, sender: Any) -> str:
    return gettext("send an SMS from %(sender)s", sender=sender) if sender else gettext("send an SMS")


# A journey: "When the payment status changes to Awaiting payment: wait 1 day, then if the payment status is Awaiting
# payment, send an SMS, then wait 2 days, ..., once per order; leave as soon as the payment status is Paid."
def _journey(
    gettext: Gettext, language: str, campaign: Mapping[str, Any], statuses: _Statuses, when: str, reentry: str
) -> str:
    phrases: list[str] = []
    after_filter = False
    for index, step in enumerate(campaign["steps"]):
        phrase = _step(gettext, language, step, statuses, first=index == 0 or after_filter)
        phrases.append(phrase)
        after_filter = step.get("kind") == "filter"
    exits = [_condition(gettext, language, c, statuses) for c in campaign.get("exit_conditions") or []]
    steps = ", ".join(phrases)
    if not exits:
        return gettext("%(when)s: %(steps)s, %(reentry)s.", when=when, steps=steps, reentry=reentry)
    return gettext(
        "%(when)s: %(steps)s, %(reentry)s; leave as soon as %(exits)s.",
        when=when,
        steps=steps,
        reentry=reentry,
        exits=format_list(exits, locale=language),
    )


def _step(gettext: Gettext, language: str, step: Mapping[str, Any], statuses: _Statuses, *, first: bool) -> str:
    """One step in words; a step after another (and not right after a filter's "if") begins with "then"."""
    kind = step.get("kind")
    conditions = format_list(
        [_condition(gettext, language, c, statuses) for c in step.get("conditions") or []] or [NOT_CHOSEN],
        locale=language,
    )
    if kind == "filter":  # its own "then": Russian puts a comma after it before "if"
        return (
            gettext("if %(conditions)s", conditions=conditions)
            if first
            else gettext("then if %(conditions)s", conditions=conditions)
        )
    if kind == "wait_duration":
        phrase = gettext("wait %(duration)s", duration=duration(language, step.get("minutes")))
    elif kind == "wait_until_time":
        phrase = gettext("wait until %(time)s", time=str(step.get("time", ""))[:5])
    elif kind == "wait_until":
        longest = duration(language, step.get("longest_minutes"))
        phrase = gettext("wait until %(conditions)s, at most %(duration)s", conditions=conditions, duration=longest)
    elif kind == "send_sms":
        phrase = _send(gettext, step.get("sender"))
    else:
        phrase = str(kind)
    return phrase if first else gettext("then %(step)s", step=phrase)


def duration(language: str, minutes: Any) -> str:
    """A number of minutes in days, hours and minutes of the user's language: "1 day 2 hours", «2 дня 3 часа»."""
    total = int(minutes or 0)
    days, rest = divmod(total, 24 * 60)
    amounts = ((days, "duration-day"), (rest // 60, "duration-hour"), (rest % 60, "duration-minute"))
    parts = [format_unit(n, unit, length="long", locale=language) for n, unit in amounts if n]
    if not parts:
        return format_unit(0, "duration-minute", length="long", locale=language)
    return " ".join(parts)  # no commas: the sentence's steps are separated by commas


@dataclass(frozen=True)
class _Statuses:
    """Statuses by name, as a sentence lists them: "Shipped or Delivered", «Отправлен» или «Доставлен»."""

    gettext: Gettext
    language: str
    names: Mapping[str, str]

    def name(self, code: str) -> str:
        name = self.names.get(code, code)
        return f"«{name}»" if self.language == "ru" else name  # Russian quotes a name it does not decline

    def either(self, codes: Any) -> str:
        listed = [codes] if isinstance(codes, str) else list(codes or [])
        if not listed:
            return NOT_CHOSEN
        return format_list([self.name(code) for code in listed], style="or", locale=self.language)

    def neither(self, codes: Any) -> str:
        listed = [codes] if isinstance(codes, str) else list(codes or [])
        negated = [self.gettext("not %(status)s", status=self.name(code)) for code in listed]
        return format_list(negated, locale=self.language) if negated else NOT_CHOSEN


def _trigger(gettext: Gettext, trigger: Mapping[str, Any], statuses: _Statuses) -> str:
    origin, status_type, target = trigger.get("from", "any"), trigger["status_type"], statuses.either(trigger.get("to"))
    if origin == "none" and status_type in FIRST_STATUS_WORDS:
        return gettext(FIRST_STATUS_WORDS[status_type], to=target)
    type_words = gettext(TYPE_WORDS.get(status_type, status_type))
    if origin in ("any", "none"):
        return gettext(TRIGGER_WORDS["any"], type=type_words, to=target)
    return gettext(TRIGGER_WORDS["listed"], type=type_words, to=target, **{"from": statuses.either(origin)})


def _condition(gettext: Gettext, language: str, condition: Mapping[str, Any], statuses: _Statuses) -> str:
    kind = condition.get("kind")
    if kind == "order_status":
        value = condition.get("value")
        wanted = statuses.neither(value) if condition.get("op") == "not_in" else statuses.either(value)
        status_type = condition.get("status_type", "")
        return gettext(
            "%(type)s is %(statuses)s", type=gettext(TYPE_WORDS.get(status_type, status_type)), statuses=wanted
        )
    if kind == "amount":
        currency = condition.get("currency")
        least, most = (_money(language, condition.get(bound), currency) for bound in ("min", "max"))
        if least and most:  # the currency once, after the maximum
            least = _money(language, condition.get("min"), None)
            return gettext("the order amount is between %(min)s and %(max)s", min=least, max=most)
        if least:
            return gettext("the order amount is at least %(min)s", min=least)
        return gettext("the order amount is at most %(max)s", max=most)
    if kind == "sms_consent":
        return gettext("the customer agreed to SMS")
    if kind == "has_phone":
        return gettext("the customer has a valid mobile phone")
    return str(kind)


def _money(language: str, amount: Any, currency: Any) -> str:
    if amount is None or amount == "":
        return ""
    try:
        number = format_decimal(Decimal(str(amount)), locale=language)
    except InvalidOperation:
        number = str(amount)
    return f"{number} {currency}" if currency else number
