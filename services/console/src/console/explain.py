"""The services' codes and developer messages in a marketer's words, each saying what to do about it: the reasons
a campaign did not send (the campaigns service's decision codes), why an SMS failed (the notifier's failure codes),
and a template's problems. The services keep their stable codes and English details for logs and the API; the
console translates what it shows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from console.domain import N_

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
