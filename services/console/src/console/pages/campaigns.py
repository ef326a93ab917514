"""Campaigns: the list with the last day's counts and what each campaign does in a sentence, the editor (trigger
"Order status changed", "Filter customers", "Send SMS") with that sentence, a variable picker and the text's
encoding and segments, and a live preview as the marketer types, the state actions, and the stats page. Every read
and change goes to the campaigns service's API; statuses are chosen by name from the registry's list."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData, QueryParams

from console import explain
from console.backends import BackendProblem, Service, segment
from console.catalog import STATUS_TYPES, choices, partner_statuses
from console.web import N_, Marketer, Page, PartnerUser, flash
from contracts.sms_text import TEMPLATE_VARIABLES

router = APIRouter(prefix="/campaigns")

FILTER_KINDS = ("order_status", "amount", "sms_consent", "has_phone")
PAGE_SIZE = 20
ACTIONS = {"activate": ("POST", "/activate"), "pause": ("POST", "/pause"), "archive": ("DELETE", "")}
CHANGED_BY_SOMEONE_ELSE = N_("This campaign was changed by someone else since you opened it. Reload to see the change.")
PREVIEW_NAME = "Preview"
FIELD_LABELS = {
    "name": N_("Campaign name"),
    "status_type": N_("Status type"),
    "from_codes": N_("Original status"),
    "to_codes": N_("Target status"),
    "filters": N_("Filter customers"),
    "template": N_("Text template"),
    "sender": N_("Sender"),
    "reentry": N_("Re-entry"),
    "quiet_hours": N_("Quiet hours"),
    "transactional": N_("Transactional"),
}
SAMPLE_CUSTOMER = {"name": "Анна", "phone": "+79161234567"}
# The variable picker's names for what a template may use (every one of contracts.sms_text.TEMPLATE_VARIABLES).
VARIABLE_LABELS = {
    "customer.name": N_("Customer name"),
    "order.id": N_("Order number"),
    "order.amount": N_("Order amount"),
    "order.currency": N_("Currency"),
    "from_status.name": N_("Original status"),
    "from_status.code": N_("Original status (its code)"),
    "to_status.name": N_("Target status"),
    "to_status.code": N_("Target status (its code)"),
    "status_type": N_("Status type"),
}
AUTO = "auto"  # a sample order's status of a type: the one the conditions ask for
OPS = ("eq", "in", "not_in")
MONEY = re.compile(r"\d{1,13}(\.\d{1,2})?")
# What the editor itself checks before asking the campaigns service, in words that say what to do.
NO_TARGET = N_("Tick the status the order changes to: the SMS goes when an order reaches it.")
NO_TEXT = N_("Write the text of the SMS.")
NO_ORIGIN = N_("Tick at least one original status, or choose “Any”.")
NO_STATUS = N_("Tick the status this condition asks for.")
NO_STATUSES = N_("Tick at least one status.")
NO_BOUND = N_("Enter a minimum, a maximum or both.")
NOT_AN_AMOUNT = N_("Enter amounts such as 1990 or 1990.50.")
BOUNDS_REVERSED = N_("The minimum is above the maximum.")
AMOUNT_WORDS = {
    "amount_below_min": N_("the amount %(amount)s is below the minimum, %(bound)s."),
    "amount_above_max": N_("the amount %(amount)s is above the maximum, %(bound)s."),
}
NOT_A_CURRENCY = N_("Three letters, such as RUB, or leave it empty for any currency.")
# A journey's steps (issue 33): the kinds in the order the "Add step" menu offers them, and what the editor checks.
STEP_KINDS = ("wait_duration", "wait_until_time", "wait_until", "filter", "send_sms")
LONGEST_WAIT_MINUTES = 90 * 24 * 60  # the campaigns service's bound: 90 days
NO_DURATION = N_("Enter how long to wait: days, hours or minutes, at most 90 days in all.")
NO_TIME = N_("Enter a time of day, such as 10:00.")
NO_CONDITIONS = N_("Add at least one condition.")
NO_SEND_STEP = N_("A journey needs at least one “Send SMS” step.")
NOT_MINUTES = N_("Enter a whole number of minutes, 0 or more.")
STEP_LABELS = {
    "wait_duration": N_("Wait"),
    "wait_until_time": N_("Wait until a time of day"),
    "wait_until": N_("Wait until a condition holds"),
    "filter": N_("Filter, checked again then"),
    "send_sms": N_("Send SMS"),
}
# The preview's timeline: what happens to the sample order at each moment (the campaigns service's kinds).
MOMENT_LABELS = {
    "entered": N_("Enters the journey"),
    "wait": N_("Waits"),
    "filter": N_("Passes the filter"),
    "send": N_("Sends an SMS"),
    "exit": N_("Leaves by an exit condition"),
    "leave": N_("Leaves the journey"),
    "done": N_("Reaches the end of the journey"),
}
# Why the sample order leaves (the campaigns service's left reason, before the colon of its detail).
LEFT_WORDS = {
    "exit": N_("the exit conditions hold"),
    "filtered_out": N_("a filter's condition does not hold, or there is no phone to send to"),
    "capped": N_("the frequency cap holds the SMS back"),
    "failed": N_("the template gives no text that can be sent"),
    "paused_too_long": N_("its wait ended during a pause, too long ago"),
    "archived": N_("the campaign is archived"),
}


@dataclass
class FilterRow:
    key: str
    kind: str = "order_status"
    status_type: str = "payment"
    op: str = "eq"
    codes: list[str] = field(default_factory=list)
    min: str = ""
    max: str = ""
    currency: str = ""
    owner: str = "entry"  # whose condition: "entry" (Filter customers), "exit" (the journey's exits), or a step's key

    def problem(self) -> str | None:
        """What the marketer still has to fill in or correct in this row (untranslated), or None."""
        if self.kind == "order_status" and not self.codes:
            return NO_STATUS if self.op == "eq" else NO_STATUSES
        if self.kind == "amount":
            if not self.min and not self.max:
                return NO_BOUND
            if not all(MONEY.fullmatch(bound) for bound in (self.min, self.max) if bound):
                return NOT_AN_AMOUNT
            if self.min and self.max and Decimal(self.min) > Decimal(self.max):
                return BOUNDS_REVERSED
            if self.currency and not re.fullmatch(r"[A-Za-z]{3}", self.currency):
                return NOT_A_CURRENCY
        return None

    def condition(self) -> dict[str, Any]:
        if self.kind == "order_status":
            value: Any = self.codes[0] if self.op == "eq" and self.codes else self.codes
            return {"kind": self.kind, "status_type": self.status_type, "op": self.op, "value": value}
        if self.kind == "amount":
            bounds = {"min": self.min or None, "max": self.max or None, "currency": self.currency.upper() or None}
            return {"kind": self.kind} | {k: v for k, v in bounds.items() if v is not None}
        return {"kind": self.kind}

    @classmethod
    def parse(cls, form: FormData | QueryParams, key: str) -> FilterRow:
        """The row `key` of a submitted form (the whole editor, or one row asking to be drawn again)."""
        kind = str(form.get(f"filter_kind_{key}", "order_status"))
        status_type = str(form.get(f"filter_type_{key}", "payment"))
        op = str(form.get(f"filter_op_{key}", "eq"))
        codes = [str(c) for c in form.getlist(f"filter_codes_{key}")]
        return cls(
            key=key,
            kind=kind if kind in FILTER_KINDS else "order_status",
            status_type=status_type if status_type in STATUS_TYPES else "payment",
            op=op if op in OPS else "eq",
            codes=codes[:1] if op == "eq" else codes,  # "is" takes one (a row redrawn from "is one of" keeps the first)
            min=str(form.get(f"filter_min_{key}", "")).strip(),
            max=str(form.get(f"filter_max_{key}", "")).strip(),
            currency=str(form.get(f"filter_currency_{key}", "")).strip(),
            owner=_owner(str(form.get(f"filter_owner_{key}", "entry"))),
        )

    @classmethod
    def of(cls, condition: dict[str, Any], owner: str = "entry") -> FilterRow:
        value = condition.get("value")
        return cls(
            key=secrets.token_hex(4),
            kind=condition["kind"],
            status_type=condition.get("status_type", "payment"),
            op=condition.get("op", "eq"),
            codes=[value] if isinstance(value, str) else list(value or []),
            min=str(condition.get("min") or ""),
            max=str(condition.get("max") or ""),
            currency=condition.get("currency") or "",
            owner=owner,
        )


def _owner(owner: str) -> str:
    """A condition's owner as the form names it: entry, exit or a step's key (which names element ids: alphanumeric)."""
    return owner if owner in ("entry", "exit") or owner.isalnum() else "entry"


def _whole(text: str) -> int | None:
    """A number field as typed: a whole number (empty is 0), or None when it is not one."""
    text = text.strip() or "0"
    return int(text) if text.isdigit() else None


@dataclass
class StepRow:
    """One step of a journey as typed: its kind, and the fields of that kind (a wait's days, hours and minutes are a
    wait_until's longest wait too). Its conditions (a filter's, a wait_until's) are FilterRows owned by its key."""

    key: str
    kind: str = "wait_duration"
    days: str = "1"
    hours: str = "0"
    minutes: str = "0"
    time: str = "10:00"
    conditions: list[FilterRow] = field(default_factory=list)
    template: str = ""
    sender: str = ""

    def duration(self) -> int | None:
        """The wait (or the longest wait) in minutes, or None when the fields give no valid one."""
        parts = [_whole(self.days), _whole(self.hours), _whole(self.minutes)]
        if any(part is None for part in parts):
            return None
        days, hours, minutes = (part or 0 for part in parts)
        total = days * 24 * 60 + hours * 60 + minutes
        return total if 1 <= total <= LONGEST_WAIT_MINUTES else None

    def problems(self) -> dict[str, str]:
        """What is still missing in this step, by the editor's field name (untranslated)."""
        problems: dict[str, str] = {}
        if self.kind in ("wait_duration", "wait_until") and self.duration() is None:
            problems[f"step_{self.key}"] = NO_DURATION
        if self.kind == "wait_until_time" and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.time):
            problems[f"step_{self.key}"] = NO_TIME
        if self.kind in ("wait_until", "filter") and not self.conditions:
            problems[f"step_{self.key}"] = NO_CONDITIONS
        if self.kind == "send_sms" and not self.template.strip():
            problems[f"step_{self.key}_template"] = NO_TEXT
        for row in self.conditions:
            if (problem := row.problem()) is not None:
                problems[f"filter_{row.key}"] = problem
        return problems

    def step(self) -> dict[str, Any]:
        """The campaigns API's Step."""
        conditions = [row.condition() for row in self.conditions]
        if self.kind == "wait_duration":
            return {"kind": self.kind, "minutes": self.duration()}
        if self.kind == "wait_until_time":
            return {"kind": self.kind, "time": self.time}
        if self.kind == "wait_until":
            return {"kind": self.kind, "conditions": conditions, "longest_minutes": self.duration()}
        if self.kind == "filter":
            return {"kind": self.kind, "conditions": conditions}
        return {"kind": self.kind, "template": self.template, "sender": self.sender or None}

    @classmethod
    def parse(cls, form: FormData, key: str, conditions: list[FilterRow]) -> StepRow:
        kind = str(form.get(f"step_kind_{key}", "wait_duration"))
        return cls(
            key=key,
            kind=kind if kind in STEP_KINDS else "wait_duration",
            days=str(form.get(f"step_days_{key}", "")).strip(),
            hours=str(form.get(f"step_hours_{key}", "")).strip(),
            minutes=str(form.get(f"step_minutes_{key}", "")).strip(),
            time=str(form.get(f"step_time_{key}", "")).strip(),
            conditions=conditions,
            template=str(form.get(f"step_template_{key}", "")),
            sender=str(form.get(f"step_sender_{key}", "")).strip(),
        )

    @classmethod
    def of(cls, step: dict[str, Any]) -> StepRow:
        key = secrets.token_hex(4)
        minutes = int(step.get("minutes") or step.get("longest_minutes") or 0)
        days, rest = divmod(minutes, 24 * 60)
        return cls(
            key=key,
            kind=step["kind"],
            days=str(days),
            hours=str(rest // 60),
            minutes=str(rest % 60),
            time=str(step.get("time") or "10:00")[:5],
            conditions=[FilterRow.of(c, owner=key) for c in step.get("conditions", [])],
            template=step.get("template") or "",
            sender=step.get("sender") or "",
        )

    @classmethod
    def new(cls, kind: str) -> StepRow:
        """A step just added from the "Add step" menu: a wait of a day, or the kind's empty fields."""
        return cls(key=secrets.token_hex(4), kind=kind if kind in STEP_KINDS else "wait_duration")


@dataclass
class CampaignForm:
    """The editor's fields as typed, so a refused form comes back as the marketer left it."""

    name: str = ""
    status_type: str = "delivery"
    from_mode: str = "any"  # any | none | listed
    from_codes: list[str] = field(default_factory=list)
    to_codes: list[str] = field(default_factory=list)
    filters: list[FilterRow] = field(default_factory=list)
    template: str = ""
    sender: str = ""
    reentry: str = "once_per_order"
    transactional: bool = False
    quiet_hours: str = "partner_default"  # partner_default | deliver_immediately | window
    window_start: str = "09:00"
    window_end: str = "21:00"
    version: str = ""
    # a journey (issue 33): no steps is today's one-step campaign (its template and sender are the one send)
    steps: list[StepRow] = field(default_factory=list)
    exits: list[FilterRow] = field(default_factory=list)
    late_send_minutes: str = "60"

    @classmethod
    def parse(cls, form: FormData) -> CampaignForm:
        keys = [str(k).removeprefix("filter_kind_") for k in form if str(k).startswith("filter_kind_")]
        rows = [FilterRow.parse(form, key) for key in dict.fromkeys(keys)]
        step_keys = [str(key) for key in dict.fromkeys(form.getlist("step_key")) if str(key).isalnum()]
        steps = [StepRow.parse(form, key, [row for row in rows if row.owner == key]) for key in step_keys]
        return cls(
            name=str(form.get("name", "")).strip(),
            status_type=str(form.get("status_type", "delivery")),
            from_mode=str(form.get("from_mode", "any")),
            from_codes=[str(c) for c in form.getlist("from_codes")],
            to_codes=[str(c) for c in form.getlist("to_codes")],
            filters=[row for row in rows if row.owner == "entry"],
            template=str(form.get("template", "")),
            sender=str(form.get("sender", "")).strip(),
            reentry=str(form.get("reentry", "once_per_order")),
            transactional=form.get("transactional") == "on",
            quiet_hours=str(form.get("quiet_hours", "partner_default")),
            window_start=str(form.get("window_start", "09:00")),
            window_end=str(form.get("window_end", "21:00")),
            version=str(form.get("version", "")),
            steps=steps,
            exits=[row for row in rows if row.owner == "exit"],
            late_send_minutes=str(form.get("late_send_minutes", "60")).strip(),
        )

    @classmethod
    def of(cls, campaign: dict[str, Any]) -> CampaignForm:
        trigger = campaign["trigger"]
        origin, target = trigger.get("from", "any"), trigger["to"]
        quiet = campaign.get("quiet_hours", "partner_default")
        return cls(
            name=campaign["name"],
            status_type=trigger["status_type"],
            from_mode=origin if origin in ("any", "none") else "listed",
            from_codes=[] if origin in ("any", "none") else ([origin] if isinstance(origin, str) else list(origin)),
            to_codes=[target] if isinstance(target, str) else list(target),
            filters=[FilterRow.of(c) for c in campaign.get("filters", [])],
            template=campaign.get("template") or "",
            sender=campaign.get("sender") or "",
            reentry=campaign.get("reentry", "once_per_order"),
            transactional=campaign.get("transactional", False),
            quiet_hours=quiet if isinstance(quiet, str) else "window",
            window_start=quiet["start"] if isinstance(quiet, dict) else "09:00",
            window_end=quiet["end"] if isinstance(quiet, dict) else "21:00",
            version=str(campaign.get("version", "")),
            steps=[StepRow.of(step) for step in campaign.get("steps") or []],
            exits=[FilterRow.of(c, owner="exit") for c in campaign.get("exit_conditions") or []],
            late_send_minutes=_minutes_text(campaign.get("late_send_minutes", 60)),
        )

    def definition(self) -> dict[str, Any]:
        """The campaigns API's CampaignDefinition."""
        origin: Any = self.from_mode if self.from_mode in ("any", "none") else self.from_codes
        target: Any = self.to_codes[0] if len(self.to_codes) == 1 else self.to_codes
        quiet: Any = (
            {"start": self.window_start, "end": self.window_end} if self.quiet_hours == "window" else self.quiet_hours
        )
        definition = {
            "name": self.name,
            "trigger": {"status_type": self.status_type, "from": origin, "to": target},
            "filters": [row.condition() for row in self.filters],
            "template": self.template,
            "sender": self.sender or None,
            "reentry": self.reentry,
            "transactional": self.transactional,
            "quiet_hours": quiet,
        }
        if not self.steps:  # today's one-step campaign, exactly as before journeys
            return definition
        late = _whole(self.late_send_minutes)
        del definition["template"], definition["sender"]  # a journey's texts are its send steps'
        return definition | {
            "steps": [step.step() for step in self.steps],
            "exit_conditions": [row.condition() for row in self.exits],
            "late_send_minutes": late if late is not None else self.late_send_minutes,
        }

    def to_journey(self) -> CampaignForm:
        """The one-step campaign as a journey of one step: its template and sender become a "Send SMS" step."""
        if self.steps:
            return self
        send = replace(StepRow.new("send_sms"), template=self.template, sender=self.sender)
        return replace(self, steps=[send], template="", sender="")

    def add_step(self, kind: str, after: str) -> CampaignForm:
        """A new step of `kind` after the step keyed `after` (at the start when no step has that key)."""
        keys = [step.key for step in self.steps]
        at = keys.index(after) + 1 if after in keys else 0
        return replace(self, steps=[*self.steps[:at], StepRow.new(kind), *self.steps[at:]])

    def problems(self) -> dict[str, str]:
        """What the editor can tell before asking the service, by field (untranslated): what is still missing."""
        problems: dict[str, str] = {}
        if not self.to_codes:
            problems["to_codes"] = NO_TARGET
        if not self.steps and not self.template.strip():
            problems["template"] = NO_TEXT
        if self.from_mode == "listed" and not self.from_codes:
            problems["from_codes"] = NO_ORIGIN
        for row in [*self.filters, *self.exits]:
            if (problem := row.problem()) is not None:
                problems[f"filter_{row.key}"] = problem
        for step in self.steps:
            problems |= step.problems()
        if self.steps and not any(step.kind == "send_sms" for step in self.steps):
            problems["steps"] = NO_SEND_STEP
        if self.steps and _whole(self.late_send_minutes) is None:
            problems["late_send_minutes"] = NOT_MINUTES
        return problems

    def complete(self) -> CampaignForm:
        """The form without what is still being filled in (the preview and the summary leave it out): conditions not
        filled in, and a journey's steps that are not complete yet."""
        steps = [replace(s, conditions=[r for r in s.conditions if r.problem() is None]) for s in self.steps]
        return replace(
            self,
            filters=[row for row in self.filters if row.problem() is None],
            exits=[row for row in self.exits if row.problem() is None],
            steps=[step for step in steps if not step.problems()],
            late_send_minutes=self.late_send_minutes if _whole(self.late_send_minutes) is not None else "60",
        )

    def field_of(self, api_field: str) -> str:
        """The editor's field for a field the API names (`trigger.to`, `filters.0.value`, `definition.template`)."""
        parts = api_field.removeprefix("definition.").split(".")
        if parts[0] == "trigger" and len(parts) > 1:
            return {"to": "to_codes", "from": "from_codes", "status_type": "status_type"}.get(parts[1], "to_codes")
        if parts[0] == "filters" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(self.filters):
            return f"filter_{self.filters[int(parts[1])].key}"
        if parts[0] == "exit_conditions" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(self.exits):
            return f"filter_{self.exits[int(parts[1])].key}"
        if parts[0] == "steps" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(self.steps):
            return self._step_field(self.steps[int(parts[1])], parts[2:])
        return parts[0]

    @staticmethod
    def _step_field(step: StepRow, parts: list[str]) -> str:
        """A step's field for the rest of an API path (`template`, `conditions.0.value`, `minutes`)."""
        if parts[:1] == [step.kind]:  # pydantic names the kind of a discriminated union: steps.2.send_sms.sender
            parts = parts[1:]
        if parts and parts[0] in ("template", "sender"):
            return f"step_{step.key}_{parts[0]}"
        if (
            parts[:1] == ["conditions"]
            and len(parts) > 1
            and parts[1].isdigit()
            and int(parts[1]) < len(step.conditions)
        ):
            return f"filter_{step.conditions[int(parts[1])].key}"
        return f"step_{step.key}"


def _minutes_text(minutes: Any) -> str:
    return "" if minutes is None else str(minutes)


# --- reading -------------------------------------------------------------------------------------------------


def _a_day_ago() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).isoformat()


async def _last_day(page: Page, campaign_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = await page.api.get(
        Service.CAMPAIGNS, f"/v1/campaigns/{segment(campaign_id)}/stats", since=_a_day_ago()
    )
    return stats


async def _last_day_of_each(page: Page, campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last day's counts of every campaign listed, in one call."""
    if not campaigns:
        return []
    ids = [c["id"] for c in campaigns]
    listed = await page.api.get(Service.CAMPAIGNS, "/v1/campaigns/stats", campaign_id=ids, since=_a_day_ago())
    items: list[dict[str, Any]] = listed["items"]
    return items


def _names(page: Page, statuses: list[dict[str, Any]]) -> dict[str, str]:
    """Every status's name in the user's language by code (archived ones too: a campaign may still name one)."""
    return {status["code"]: page.fmt.status_name(status) for status in statuses}


def _summary(page: Page, form: CampaignForm, names: dict[str, str]) -> str:
    """What the campaign does, in a sentence of the user's language (explain.summary)."""
    return explain.summary(page.gettext, page.fmt.language, form.complete().definition(), names)


@router.get("")
async def list_campaigns(page: PartnerUser, state: str | None = None, cursor: str | None = None) -> Response:
    listing = await page.api.get(Service.CAMPAIGNS, "/v1/campaigns", state=state, cursor=cursor, limit=PAGE_SIZE)
    campaigns = listing["items"]
    counts, statuses = await asyncio.gather(
        _last_day_of_each(page, campaigns), partner_statuses(page, include_archived=True)
    )
    names = _names(page, statuses)
    summaries = [explain.summary(page.gettext, page.fmt.language, c, names) for c in campaigns]
    return page.render(
        "campaigns/list.html",
        campaigns=list(zip(campaigns, counts, summaries, strict=True)),
        state=state or "",
        next_cursor=listing.get("next_cursor"),
    )


async def _editor(
    page: Page,
    form: CampaignForm,
    *,
    campaign: dict[str, Any] | None,
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    statuses, partner_settings, journey = await asyncio.gather(
        partner_statuses(page, include_archived=True),
        page.api.get(Service.CAMPAIGNS, "/v1/settings"),
        _journey_figures(page, campaign),
    )
    return page.render(
        "campaigns/editor.html",
        status_code,
        campaign=campaign,
        partner_settings=partner_settings,
        summary=_summary(page, form, _names(page, statuses)),
        **(_flow_context(page, form, choices(page, statuses), errors) | _figures_context(form, campaign, journey)),
    )


def _flow_context(
    page: Page, form: CampaignForm, statuses: dict[str, list[tuple[str, str]]], errors: dict[str, str]
) -> dict[str, Any]:
    """What the flow (campaigns/flow.html: exits, trigger, entry filters, the steps or the one send) is drawn from."""
    counts = {
        step.key: explain.text_count(page.gettext, step.template) for step in form.steps if step.kind == "send_sms"
    }
    return {
        "form": form,
        "errors": errors,
        "statuses": statuses,
        "types": STATUS_TYPES,
        "filter_kinds": FILTER_KINDS,
        "step_kinds": STEP_KINDS,
        "sample": SAMPLE_CUSTOMER,
        "count": explain.text_count(page.gettext, form.template),
        "step_counts": counts,
        "variables": _variables(page),
        "figures": {},
        "older_versions": [],
        "added": "",
    }


async def _journey_figures(page: Page, campaign: dict[str, Any] | None) -> dict[str, Any] | None:
    """A saved journey's figures by step and its orders on each version (GET /v1/campaigns/{id}/journey)."""
    if not campaign or not campaign.get("steps"):
        return None
    try:
        figures: dict[str, Any] = await page.api.get(
            Service.CAMPAIGNS, f"/v1/campaigns/{segment(campaign['id'])}/journey"
        )
    except BackendProblem as refused:
        if refused.status == 404:  # a campaigns service older than journeys' figures: the editor goes without them
            return None
        raise
    return figures


def _figures_context(
    form: CampaignForm, campaign: dict[str, Any] | None, journey: dict[str, Any] | None
) -> dict[str, Any]:
    """Each step's figures by its key (the form drawn from the saved campaign: its steps in the saved order), and the
    orders still on older versions than the one shown, newest first."""
    if journey is None or campaign is None:
        return {"figures": {}, "older_versions": []}
    by_index = {int(figure["index"]): figure for figure in journey.get("steps", [])}
    figures = {step.key: by_index[i] for i, step in enumerate(form.steps) if i in by_index}
    # the current definition is the latest one saved (the campaign's own version also counts its state changes)
    versions = journey.get("versions", [])
    current = max((int(v["version"]) for v in versions), default=None)
    older = [v for v in versions if v.get("version") != current and v.get("orders_in_journey")]
    return {"figures": figures, "older_versions": sorted(older, key=lambda v: -int(v["version"]))}


def _variables(page: Page) -> list[tuple[str, str]]:
    """The variable picker's choices: (variable, its name in the user's language)."""
    return [(v, page.gettext(VARIABLE_LABELS[v]) if v in VARIABLE_LABELS else v) for v in TEMPLATE_VARIABLES]


@router.get("/new")
async def new_campaign(page: Marketer) -> Response:
    # no condition to begin with: an SMS to every customer whose order changes so, until the marketer adds one
    return await _editor(page, CampaignForm(), campaign=None, errors={})


@router.get("/{campaign_id}")
async def edit_campaign(page: PartnerUser, campaign_id: str) -> Response:
    campaign = await page.api.get(Service.CAMPAIGNS, f"/v1/campaigns/{segment(campaign_id)}")
    return await _editor(page, CampaignForm.of(campaign), campaign=campaign, errors={})


# --- changing ------------------------------------------------------------------------------------------------


def _errors(page: Page, form: CampaignForm, refused: BackendProblem) -> dict[str, str]:
    if refused.status == 412:
        return {"": page.gettext(CHANGED_BY_SOMEONE_ELSE)}
    errors: dict[str, str] = {}
    for name, message in page.field_errors(refused).items():
        field_name = form.field_of(name)
        error = next(e for e in refused.errors() if e.get("field") == name)
        is_template = field_name == "template" or field_name.endswith("_template")  # a send step's too
        if is_template and error.get("type") == "rule_violation":  # the template's own problem
            message = explain.template_problem(page.gettext, message, error.get("line"))
        errors.setdefault(field_name, message)
    return errors or {"": refused.detail}


def _problems(page: Page, form: CampaignForm) -> dict[str, str]:
    return {name: page.gettext(message) for name, message in form.problems().items()}


@router.post("")
async def create_campaign(page: Marketer) -> Response:
    form = CampaignForm.parse(await page.request.form())
    if problems := _problems(page, form):
        return await _editor(page, form, campaign=None, errors=problems, status_code=422)
    try:
        created = await page.api.call(Service.CAMPAIGNS, "POST", "/v1/campaigns", json=form.definition())
    except BackendProblem as refused:
        return await _editor(page, form, campaign=None, errors=_errors(page, form, refused), status_code=422)
    flash(page.request, page.gettext("Campaign “%(name)s” saved as a draft.", name=form.name))
    return page.redirect(f"/campaigns/{created.body['id']}")


@router.post("/preview")
async def live_preview(page: PartnerUser) -> Response:
    """The editor's live preview: the form as typed, against a chosen order or a sample one. What is not filled in
    yet is a hint, not an error: the preview shows what it can (a condition still empty is left out of it)."""
    submitted = await page.request.form()
    form = CampaignForm.parse(submitted)
    if saved := str(submitted.get("saved_campaign", "")):  # a read-only editor: its fields are not sent
        form = CampaignForm.of(await page.api.get(Service.CAMPAIGNS, f"/v1/campaigns/{segment(saved)}"))
    problems = form.problems()
    statuses = await partner_statuses(page, include_archived=True)  # a real order may still have an archived one
    names = _names(page, statuses)
    context: dict[str, Any] = {"preview": None, "errors": [], "problem": None, "reasons": [], "sample": {}}
    context["summary"] = _summary(page, form, names)  # the editor's sentence follows the form (an out-of-band swap)
    context["summary_oob"] = True
    context["hints"] = [(_field_label(page, form, name), page.gettext(text)) for name, text in problems.items()]
    previewed = form.complete()
    no_send = bool(form.steps) and not any(step.kind == "send_sms" for step in previewed.steps)
    if "to_codes" in problems or "template" in problems or no_send:  # nothing to show yet
        return page.render("campaigns/preview.html", **context)
    # a name is not needed to see what the campaign would do: the save asks for it, beside its field
    definition = previewed.definition() | {"name": form.name or PREVIEW_NAME}
    if "from_codes" in problems:
        definition["trigger"]["from"] = "any"
    try:
        order = await _preview_order(page, submitted, previewed, choices(page, statuses))
        body = {"definition": definition, "order": order, **_preview_change(previewed)}
        preview = (await page.api.call(Service.CAMPAIGNS, "POST", "/v1/campaigns/preview", json=body)).body
    except BackendProblem as refused:
        errors = _errors(page, form, refused) if refused.errors() else {}
        context["errors"] = [(_field_label(page, form, name), message) for name, message in errors.items()]
        context["problem"] = None if errors else refused.detail
        return page.render("campaigns/preview.html", **context)
    context["preview"] = preview
    context["timeline"] = _timeline(page, preview, previewed)
    context["reasons"] = [_reason_words(page, r, previewed, form, order, names) for r in preview["reasons"]]
    if preview.get("template_error"):
        context["template_error"] = explain.template_problem(page.gettext, preview["template_error"])
    current = order["statuses"] | {form.status_type: form.to_codes[0]}  # the change's own type: its target
    context["sample"] = {t: names.get(current[t], current[t]) for t in STATUS_TYPES if current.get(t)}
    return page.render("campaigns/preview.html", **context)


def _reason_words(
    page: Page,
    reason: dict[str, Any],
    previewed: CampaignForm,
    form: CampaignForm,
    order: dict[str, Any],
    names: dict[str, str],
) -> str:
    """One of the preview's reasons in the user's words: which condition, and what the order has instead."""
    index = reason.get("condition")
    if index is None or index >= len(previewed.filters):
        return explain.reason(page.gettext, reason["code"])
    row = previewed.filters[index]
    label = _field_label(page, form, f"filter_{row.key}")
    if row.kind == "order_status":
        current = order["statuses"].get(row.status_type)
        words = {
            "eq": N_("the %(type)s status is %(current)s; the condition asks for %(wanted)s."),
            "in": N_("the %(type)s status is %(current)s; the condition asks for one of: %(wanted)s."),
            "not_in": N_("the %(type)s status is %(current)s; the condition asks for none of: %(wanted)s."),
        }[row.op]
        text = page.gettext(
            words,
            type=page.gettext(explain.STATUS_TYPE_LABELS[row.status_type]),
            current=names.get(current, current) if current else page.gettext("none yet"),
            wanted=", ".join(names.get(code, code) for code in row.codes),
        )
    elif reason["code"] in AMOUNT_WORDS:
        bound = row.min if reason["code"] == "amount_below_min" else row.max
        text = page.gettext(AMOUNT_WORDS[reason["code"]], amount=order["amount"], bound=bound)
    elif reason["code"] == "currency_mismatch":
        text = page.gettext(
            "the order is in %(currency)s; the condition counts only %(wanted)s.",
            currency=order["currency"],
            wanted=row.currency.upper(),
        )
    else:
        return f"{label}: {explain.reason(page.gettext, reason['code'])}"
    return f"{label}: {text}"


def _field_label(page: Page, form: CampaignForm, name: str) -> str:
    """The editor's label of one of its fields (`filter_<key>` is the condition's number, `step_<key>...` the step's,
    with its kind)."""
    keys = [row.key for row in form.filters]
    if name.startswith("filter_") and name.removeprefix("filter_") in keys:
        return page.gettext("Condition %(number)s", number=keys.index(name.removeprefix("filter_")) + 1)
    exits = [row.key for row in form.exits]
    if name.startswith("filter_") and name.removeprefix("filter_") in exits:
        return page.gettext("Exit condition %(number)s", number=exits.index(name.removeprefix("filter_")) + 1)
    for number, step in enumerate(form.steps, start=1):
        label = page.gettext("Step %(number)s (%(kind)s)", number=number, kind=page.gettext(STEP_LABELS[step.kind]))
        conditions = [row.key for row in step.conditions]
        if name.startswith("filter_") and name.removeprefix("filter_") in conditions:
            position = conditions.index(name.removeprefix("filter_")) + 1
            return page.gettext("%(step)s, condition %(number)s", step=label, number=position)
        if name in (f"step_{step.key}", f"step_{step.key}_template", f"step_{step.key}_sender"):
            return label
    labels = FIELD_LABELS | {"steps": N_("Steps"), "late_send_minutes": N_("Late send after a pause")}
    return page.gettext(labels[name]) if name in labels else name


def _timeline(page: Page, preview: dict[str, Any], previewed: CampaignForm) -> list[dict[str, Any]]:
    """The preview's timeline in the user's words: when (after the trigger), which step, what happens, the API's
    words on why, and an SMS's text."""
    moments = []
    timeline = preview.get("timeline") or []
    for position, moment in enumerate(timeline):
        index = moment.get("step")
        step = previewed.steps[index] if isinstance(index, int) and index < len(previewed.steps) else None
        minutes = round(float(moment.get("after_minutes") or 0))
        when = page.gettext("after %(duration)s", duration=explain.duration(page.fmt.language, minutes))
        kind = str(moment.get("kind", ""))
        what = page.gettext(MOMENT_LABELS[kind]) if kind in MOMENT_LABELS else kind
        detail = ""
        if kind == "wait" and position + 1 < len(timeline):  # how long: until the next moment
            waited = round(float(timeline[position + 1].get("after_minutes") or 0)) - minutes
            what = page.gettext("Waits %(duration)s", duration=explain.duration(page.fmt.language, waited))
        if kind in ("exit", "leave"):  # why it stops, then each of the service's reasons, all in the user's words
            code = str(moment.get("detail") or "").partition(": ")[0]
            words = page.gettext(LEFT_WORDS[code]) if code in LEFT_WORDS else code
            codes = [str(r.get("code")) for r in moment.get("reasons") or [] if isinstance(r, dict)]
            specifics = " ".join(explain.reason(page.gettext, c) for c in codes)
            detail = f"{words} ({specifics})" if specifics and code != "exit" else words
        label = page.gettext(STEP_LABELS[step.kind]) if step is not None else ""
        moments.append(
            {
                "kind": kind,
                "when": when if minutes else page.gettext("at once"),
                "step": page.gettext("Step %(number)s (%(kind)s)", number=index + 1, kind=label) if label else "",
                "what": what,
                "detail": detail,
                "text": moment.get("text"),
            }
        )
    return moments


def _preview_change(form: CampaignForm) -> dict[str, Any]:
    origin = form.from_codes[0] if form.from_mode == "listed" and form.from_codes else None
    return {"from": origin, "to": form.to_codes[0]}


async def _preview_order(
    page: Page, submitted: FormData, form: CampaignForm, offered: dict[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    """A real order of the partner's (by id), or the sample the marketer describes."""
    order_id = str(submitted.get("preview_order", "")).strip()
    if order_id:
        order = await page.api.get(Service.ORDERS, f"/v1/orders/{segment(order_id)}")
        current = order.get("statuses") or {}
        statuses = {t: (current.get(t) or {}).get("code") for t in STATUS_TYPES if t != form.status_type}
        customer = {k: v for k, v in (order.get("customer") or {}).items() if v is not None}
        return {
            "order_id": order["order_id"],
            "amount": order["amount"],
            "currency": order["currency"],
            "customer": customer,
            "statuses": {t: c for t, c in statuses.items() if c},
        }
    statuses = {t: _sample_status(submitted, form, t, offered[t]) for t in STATUS_TYPES if t != form.status_type}
    return {
        "order_id": "sample",
        "amount": str(submitted.get("sample_amount", "1990.00")) or "1990.00",
        "currency": "RUB",
        "customer": {
            "id": "sample-customer",
            "name": str(submitted.get("sample_name", "")) or None,
            "phone": str(submitted.get("sample_phone", "")) or None,
            "sms_consent": submitted.get("sample_consent") == "on",
        },
        "statuses": {t: c for t, c in statuses.items() if c},
    }


def _sample_status(submitted: FormData, form: CampaignForm, status_type: str, offered: list[tuple[str, str]]) -> str:
    """The sample order's status of `status_type`: the one chosen, or (AUTO) the one the conditions ask for, so
    that the first preview shows the message being sent. Without a condition on the type: none."""
    chosen = str(submitted.get(f"sample_status_{status_type}", AUTO))
    if chosen != AUTO:
        return chosen
    for row in form.filters:
        if row.kind == "order_status" and row.status_type == status_type and row.codes:
            if row.op != "not_in":
                return row.codes[0]
            others = [code for code, _ in offered if code not in row.codes]
            return others[0] if others else ""
    return ""


@router.post("/-/text-count")
async def text_count(page: PartnerUser, field: str = "template") -> Response:
    """Beside the text box, as the marketer types: the encoding, characters as billed, segments, and what forced
    UCS-2, of the text as written (`field`: a journey's send step names its own box)."""
    template = str((await page.request.form()).get(field, ""))
    return page.render("campaigns/text_count.html", count=explain.text_count(page.gettext, template))


@router.post("/-/flow")
async def flow(page: Marketer) -> Response:
    """The flow drawn again with one more step (`flow_add`: "<kind>@<key of the step it follows>", or "@start"), the
    form's fields as typed; a one-step campaign becomes a journey whose first step is its send ("Add a step")."""
    submitted = await page.request.form()
    form = CampaignForm.parse(submitted)
    kind, _, after = str(submitted.get("flow_add", "")).partition("@")
    before = {step.key for step in form.steps}
    form = form.add_step(kind, after) if form.steps else form.to_journey()
    added = next((step.key for step in form.steps if step.key not in before), "")
    statuses, partner_settings = await asyncio.gather(
        partner_statuses(page), page.api.get(Service.CAMPAIGNS, "/v1/settings")
    )
    context = _flow_context(page, form, choices(page, statuses), {}) | {"added": added}
    return page.render("campaigns/flow.html", partner_settings=partner_settings, read_only=False, **context)


@router.post("/{campaign_id}")
async def save_campaign(page: Marketer, campaign_id: str) -> Response:
    form = CampaignForm.parse(await page.request.form())
    path = f"/v1/campaigns/{segment(campaign_id)}"
    if problems := _problems(page, form):
        campaign = await page.api.get(Service.CAMPAIGNS, path)
        return await _editor(page, form, campaign=campaign, errors=problems, status_code=422)
    try:
        await page.api.call(Service.CAMPAIGNS, "PUT", path, json=form.definition(), etag=f'"{form.version}"')
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        campaign = await page.api.get(Service.CAMPAIGNS, path)
        return await _editor(page, form, campaign=campaign, errors=_errors(page, form, refused), status_code=422)
    flash(page.request, page.gettext("Campaign “%(name)s” saved.", name=form.name))
    return page.redirect(path.removeprefix("/v1"))


@router.post("/{campaign_id}/{action}")
async def change_state(page: Marketer, campaign_id: str, action: str) -> Response:
    if action not in ACTIONS:
        return page.render("error.html", 404, reason="refused", status=404, detail=action)
    method, suffix = ACTIONS[action]
    try:
        await page.api.call(Service.CAMPAIGNS, method, f"/v1/campaigns/{segment(campaign_id)}{suffix}")
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        flash(page.request, refused.detail, "error")
    else:
        flash(page.request, page.gettext(STATE_MESSAGES[action]))
    return page.redirect(f"/campaigns/{campaign_id}")


STATE_MESSAGES = {
    "activate": N_("The campaign is active: it reacts to status changes from now on."),
    "pause": N_("The campaign is paused."),
    "archive": N_("The campaign is archived."),
}


@router.get("/{campaign_id}/stats")
async def campaign_stats(page: PartnerUser, campaign_id: str) -> Response:
    path = f"/v1/campaigns/{segment(campaign_id)}"
    campaign, total, last_day = await asyncio.gather(
        page.api.get(Service.CAMPAIGNS, path),
        page.api.get(Service.CAMPAIGNS, f"{path}/stats"),
        _last_day(page, campaign_id),
    )
    return page.render("campaigns/stats.html", campaign=campaign, total=total, last_day=last_day)


@router.get("/-/filter-row")
async def filter_row(page: Marketer, key: str | None = None, owner: str = "entry") -> Response:
    """One more condition (of "Filter customers", of the journey's exits or of a step: `owner`), or the row `key`
    drawn again for the kind or status type just chosen (its fields come along as query parameters, so what was
    typed stays)."""
    if key and key.isalnum():  # the key names the row's fields and its element id
        row = FilterRow.parse(page.request.query_params, key)
    else:
        row = FilterRow(key=secrets.token_hex(4), owner=_owner(owner))
    statuses = choices(page, await partner_statuses(page))
    return page.render(
        "campaigns/filter_row.html",
        row=row,
        statuses=statuses,
        types=STATUS_TYPES,
        filter_kinds=FILTER_KINDS,
        errors={},
    )


@router.get("/-/trigger-statuses")
async def trigger_statuses(page: Marketer, status_type: str = "delivery") -> Response:
    """The trigger's from/to choices for another status type."""
    form = CampaignForm(status_type=status_type if status_type in STATUS_TYPES else "delivery")
    statuses = choices(page, await partner_statuses(page))
    return page.render("campaigns/trigger_statuses.html", form=form, statuses=statuses, errors={})
