"""Campaigns: "order status changed -> filter customers -> send SMS", as plain rules free of I/O.

A campaign names a trigger (status type, `from`, `to`), a list of filter conditions that must all hold,
an SMS template, and the policies that keep marketing polite: re-entry (once per order or every time),
a frequency cap across the partner's campaigns, and quiet hours in the recipient's time zone. `evaluate`
turns one `OrderStatusChanged` into a `Decision`; the services layer records it and sends what it says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, NamedTuple, Protocol, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from campaigns.recipients import PhoneProblem, SendWindow, not_before, recipient_zone, sms_phone
from campaigns.templating import TemplateLimit, TemplateProblem, check_template, render, render_plain
from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.primitives import MONEY_PATTERN, CurrencyCode, Identifier, Money, OneLineName, Slug, UtcDatetime
from contracts.sms import SenderId, SendSms, send_sms_id
from contracts.sms_text import SmsParts, sms_parts
from contracts.statuses import CurrentStatuses, StatusCodes, StatusDefinition, StatusType
from servicekit.problems import Conflict, FieldError, InvalidRequest

ANY, NONE = "any", "none"
MAX_SMS_CHARACTERS = 1600  # SendSms.text's limit: ten concatenated GSM-7 segments and some
MAX_WAIT_MINUTES = 90 * 24 * 60  # a journey's single wait: 90 days at most


class CampaignState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Reentry(StrEnum):
    ONCE_PER_ORDER = "once_per_order"
    EVERY_TIME = "every_time"


CodeOrCodes = Slug | Annotated[list[Slug], Field(min_length=1, max_length=100)]


def _codes(value: str | list[str]) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value)


class Trigger(BaseModel):
    """Order status changed: of `status_type`, from `from` (a code, codes, "any" or "none") to `to`.

    "any" matches every previous status, including none; "none" only an order's first status of the type.
    A status whose code is literally "any" or "none" is named as a one-element list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    status_type: StatusType
    from_: CodeOrCodes = Field(default=ANY, alias="from")
    to: CodeOrCodes

    # Cached (the model is frozen): every decision reads them, and a backtest makes hundreds of thousands.
    @cached_property
    def to_codes(self) -> frozenset[str]:
        return _codes(self.to)

    @cached_property
    def from_codes(self) -> frozenset[str]:
        """The codes `from` names; empty for the keywords "any" and "none"."""
        return frozenset() if self.from_ in (ANY, NONE) else _codes(self.from_)

    def matches(self, status_type: StatusType, from_code: str | None, to_code: str) -> bool:
        if status_type != self.status_type or to_code not in self.to_codes:
            return False
        if self.from_ == ANY:
            return True
        if self.from_ == NONE:
            return from_code is None
        return from_code in self.from_codes


class OrderStatusCondition(BaseModel):
    """The order's current status of `status_type` equals / is in / is not in the given codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["order_status"]
    status_type: StatusType
    op: Literal["eq", "in", "not_in"]
    value: CodeOrCodes

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.op == "eq" and not isinstance(self.value, str):
            raise ValueError("op 'eq' takes one code as value; use 'in' for a list")
        if self.op != "eq" and isinstance(self.value, str):
            raise ValueError(f"op '{self.op}' takes a list of codes as value")
        return self

    @cached_property  # the model is frozen; every decision reads it
    def codes(self) -> frozenset[str]:
        return _codes(self.value)


class HasPhoneCondition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["has_phone"]


class SmsConsentCondition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sms_consent"]


AmountBound = Annotated[
    Decimal,
    Field(ge=0),
    # What validation accepts, stated exactly: pydantic's own schema for Decimal admits strings and numbers (an
    # exponent, 1e400) that it then refuses.
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1e15}, {"type": "string", "pattern": MONEY_PATTERN}]}
    ),
]


class AmountCondition(BaseModel):
    """The order amount within [min, max] (either bound optional), in `currency` when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["amount"]
    min: AmountBound | None = None
    max: AmountBound | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


Condition = Annotated[
    OrderStatusCondition | HasPhoneCondition | SmsConsentCondition | AmountCondition, Field(discriminator="kind")
]

QuietHoursChoice = Literal["partner_default", "deliver_immediately"] | SendWindow

Template = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
TimeOfDay = time  # `time` is a field's name in WaitUntilTime
WaitMinutes = Annotated[int, Field(ge=1, le=MAX_WAIT_MINUTES)]
Conditions = Annotated[list[Condition], Field(min_length=1, max_length=50)]


class WaitDuration(BaseModel):
    """Wait this long."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["wait_duration"]
    minutes: WaitMinutes


class WaitUntilTime(BaseModel):
    """Wait until the next such local time of day in the recipient's zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["wait_until_time"]
    time: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]

    @property
    def local_time(self) -> TimeOfDay:
        hours, minutes = self.time.split(":")
        return TimeOfDay(int(hours), int(minutes))


class WaitUntil(BaseModel):
    """Wait until every condition holds on the order, or `longest_minutes` passed (then go on anyway)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["wait_until"]
    conditions: Conditions
    longest_minutes: WaitMinutes


class FilterStep(BaseModel):
    """Re-check the order as it is now; an order failing any condition leaves the journey."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["filter"]
    conditions: Conditions


class SendSmsStep(BaseModel):
    """Send an SMS (caps, quiet hours and consent apply at this moment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["send_sms"]
    template: Template
    sender: SenderId | None = None


Step = Annotated[WaitDuration | WaitUntilTime | WaitUntil | FilterStep | SendSmsStep, Field(discriminator="kind")]
WAIT_STEPS = (WaitDuration, WaitUntilTime, WaitUntil)
JOURNEY_FIELDS = ("steps", "exit_conditions", "late_send_minutes")


class CampaignDefinition(BaseModel):
    """What a marketer writes; everything a campaign is apart from its identity, state and bookkeeping.

    Without `steps`, today's one-step campaign: `template` is sent at once. With steps, a journey: waits, filters
    and SMS in order (docs/campaigns.md, "Journeys"); `template` and `sender` are then absent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: OneLineName
    trigger: Trigger
    filters: list[Condition] = Field(default_factory=list, max_length=50)
    template: Template | None = Field(default=None, description="The SMS of a one-step campaign; absent in a journey")
    sender: SenderId | None = None
    reentry: Reentry = Reentry.ONCE_PER_ORDER
    transactional: bool = Field(default=False, description="A service message: exempt from the frequency cap.")
    quiet_hours: QuietHoursChoice = Field(
        default="partner_default",
        description='"partner_default", "deliver_immediately", or a window {"start": "09:00", "end": "21:00"}',
    )
    steps: list[Step] = Field(default_factory=list, max_length=50, description="A journey's steps; empty: one step")
    exit_conditions: list[Condition] = Field(
        default_factory=list, max_length=50, description="An order waiting in the journey leaves once all hold"
    )
    late_send_minutes: int = Field(
        default=60,
        ge=0,
        le=MAX_WAIT_MINUTES,
        description="On resume, a wait that ended during the pause goes on if it ended at most this long ago",
    )

    @property
    def is_journey(self) -> bool:
        return bool(self.steps)

    @model_serializer(mode="wrap")
    def _without_journey_defaults(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """A one-step campaign's JSON stays what it was before journeys (the API's and the stored bytes): the
        journey fields appear only in a journey. (No return annotation: pydantic then keeps the model's own
        serialization schema instead of one of the annotated type.)"""
        dumped = handler(self)
        if isinstance(dumped, dict) and not self.steps and not self.exit_conditions and self.late_send_minutes == 60:
            for name in JOURNEY_FIELDS:
                dumped.pop(name, None)
        return dumped


class Campaign(CampaignDefinition):
    id: str
    partner_id: str
    state: CampaignState
    version: int
    activated_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def status_codes(self) -> list[str]:
        """Every status code the campaign names: trigger from/to and filter values (the registry protects them)."""
        codes = set(self.trigger.to_codes | self.trigger.from_codes)
        conditions = [*self.filters, *self.exit_conditions]
        for step in self.steps:
            if isinstance(step, WaitUntil | FilterStep):
                conditions += step.conditions
        for condition in conditions:
            if isinstance(condition, OrderStatusCondition):
                codes |= condition.codes
        return sorted(codes)

    def reacts_to(self, published_at: datetime) -> bool:
        """Active, and the change was published since the last activation: activating a campaign (or replaying
        the topic) never sends SMS about changes from before, nor about those published while it was paused."""
        return (
            self.state == CampaignState.ACTIVE and self.activated_at is not None and published_at >= self.activated_at
        )

    def definition(self) -> CampaignDefinition:
        return CampaignDefinition.model_validate(self.model_dump(include=set(CampaignDefinition.model_fields)))


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_messages: int = Field(ge=1, le=1000)
    window_hours: int = Field(ge=1, le=24 * 31)


class PartnerSettings(BaseModel):
    """A partner's defaults for all its campaigns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quiet_hours: SendWindow | None = Field(
        default=SendWindow(start=time(9), end=time(21)),
        description="When marketing SMS may reach recipients, in their local time; null: any time.",
    )
    frequency_cap: FrequencyCap | None = Field(
        default=None, description="At most N marketing SMS per customer per rolling window; null: no cap."
    )


# --- validation on save --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    message: str
    line: int | None = None


class InvalidCampaign(InvalidRequest):
    """The campaign is well-formed but names unknown codes or has a broken template; each problem says where
    (a 422 naming each field, and the template's line)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__([_field_error(p) for p in problems])
        self.problems = problems


def _field_error(problem: Problem) -> FieldError:
    where = ".".join(str(part) for part in problem.loc)
    extra = {"line": problem.line} if problem.line is not None else {}
    return FieldError(location="body", field=where, message=problem.message, type="rule_violation", **extra)


def _code_problems(
    loc: tuple[str | int, ...], codes: Iterable[str], status_type: StatusType, catalog: Mapping[str, StatusDefinition]
) -> list[Problem]:
    problems = []
    for code in sorted(codes):
        known = catalog.get(code)
        if known is None:
            problems.append(Problem(loc, f"unknown status code '{code}'"))
        elif known.type != status_type:
            problems.append(Problem(loc, f"'{code}' is a {known.type} status, not {status_type}"))
    return problems


def check_definition(definition: CampaignDefinition, catalog: Mapping[str, StatusDefinition]) -> None:
    """Codes must exist in the partner's catalog with the right type; the template must be sound."""
    trigger = definition.trigger
    problems = _code_problems(("trigger", "from"), trigger.from_codes, trigger.status_type, catalog)
    problems += _code_problems(("trigger", "to"), trigger.to_codes, trigger.status_type, catalog)
    problems += _conditions_problems(("filters",), definition.filters, catalog)
    problems += _conditions_problems(("exit_conditions",), definition.exit_conditions, catalog)
    if definition.is_journey:
        problems += _steps_problems(definition, catalog)
    elif definition.template is None:
        problems.append(Problem(("template",), "a campaign without steps sends this template; give it"))
    else:
        problems += _template_problems(("template",), definition.template)
    if problems:
        raise InvalidCampaign(problems)


def _conditions_problems(
    loc: tuple[str | int, ...], conditions: Iterable[Condition], catalog: Mapping[str, StatusDefinition]
) -> list[Problem]:
    problems = []
    for n, condition in enumerate(conditions):
        if isinstance(condition, OrderStatusCondition):
            problems += _code_problems((*loc, n, "value"), condition.codes, condition.status_type, catalog)
    return problems


def _template_problems(loc: tuple[str | int, ...], template: str) -> list[Problem]:
    try:
        check_template(template)
    except TemplateProblem as exc:
        return [Problem(loc, exc.message, exc.line)]  # the line is a field of its own
    return []


def _steps_problems(definition: CampaignDefinition, catalog: Mapping[str, StatusDefinition]) -> list[Problem]:
    problems = []
    if definition.template is not None:
        problems.append(Problem(("template",), "a journey sends its send_sms steps' templates; leave this out"))
    if definition.sender is not None:
        problems.append(Problem(("sender",), "a journey's senders are its send_sms steps'; leave this out"))
    if not any(isinstance(step, SendSmsStep) for step in definition.steps):
        problems.append(Problem(("steps",), "a journey needs at least one send_sms step"))
    for n, step in enumerate(definition.steps):
        if isinstance(step, WaitUntil | FilterStep):
            problems += _conditions_problems(("steps", n, "conditions"), step.conditions, catalog)
        elif isinstance(step, SendSmsStep):
            problems += _template_problems(("steps", n, "template"), step.template)
    return problems


# --- states --------------------------------------------------------------------------------------

TRANSITIONS: dict[CampaignState, frozenset[CampaignState]] = {
    CampaignState.DRAFT: frozenset({CampaignState.ACTIVE, CampaignState.ARCHIVED}),
    CampaignState.ACTIVE: frozenset({CampaignState.PAUSED, CampaignState.ARCHIVED}),
    CampaignState.PAUSED: frozenset({CampaignState.ACTIVE, CampaignState.ARCHIVED}),
    CampaignState.ARCHIVED: frozenset(),
}


class StateConflict(Conflict):
    """A state change the campaign's life cycle does not allow (409 `invalid_state`)."""

    default_code = "invalid_state"


def check_transition(current: CampaignState, wanted: CampaignState) -> bool:
    """Whether moving to `wanted` changes anything; raises StateConflict when it is not allowed."""
    if current == wanted:
        return False
    if wanted not in TRANSITIONS[current]:
        raise StateConflict(f"a {current} campaign cannot become {wanted}")
    return True


# --- evaluation ----------------------------------------------------------------------------------


class Outcome(StrEnum):
    FIRED = "fired"
    FILTERED_OUT = "filtered_out"
    CAPPED = "capped"
    OUTSIDE_REENTRY = "outside_reentry"
    FAILED = "failed"  # the template could not produce a sendable text for this order
    NOT_TRIGGERED = "not_triggered"  # preview only: the consumer never evaluates a non-matching campaign
    ENTERED = "entered"  # a journey's trigger and entry filters passed: the order is in the journey


class Reason(BaseModel):
    code: str = Field(description="Stable code, e.g. payment_status, no_sms_consent, amount_below_min")
    detail: str
    condition: int | None = Field(default=None, description="Index of the failing filter condition")


# History, Context and PlannedSms are named tuples, immutable as frozen dataclasses are, and built in a third of
# the time (a frozen dataclass sets each field through object.__setattr__): a backtest builds each once per change.


class History(NamedTuple):
    """What earlier evaluations say about this order and customer."""

    fired_for_order: bool = False
    recent_marketing_sms: int = 0  # to this customer, within the partner's frequency-cap window


class Context(NamedTuple):
    now: datetime
    partner: PartnerSettings
    default_region: str
    default_zone: str


@dataclass(frozen=True)
class Policy:
    """The service-wide settings a decision depends on (campaigns.services.policy_of reads them from the settings)."""

    default_region: str
    default_zone: str
    sms_ttl: timedelta
    send_sms_topic: str

    def context(self, now: datetime, partner: PartnerSettings) -> Context:
        return Context(now, partner, self.default_region, self.default_zone)


class PlannedSms(NamedTuple):
    phone: str
    text: str
    parts: SmsParts
    time_zone: str
    not_before: datetime | None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reasons: list[Reason] = field(default_factory=list)
    sms: PlannedSms | None = None


class StatusView(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...


class StatusesView(Protocol):
    def of(self, status_type: StatusType) -> StatusView | None: ...


class CustomerView(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def sms_consent(self) -> bool: ...


class OrderView(Protocol):
    @property
    def order_id(self) -> str: ...
    @property
    def statuses(self) -> StatusesView: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def customer(self) -> CustomerView: ...


class ChangeView(Protocol):
    """What a decision reads of a status change: an `OrderStatusChanged` (the live consumer's), or the backtest's
    `contracts.past_changes.Change`, read from a line without validation (the same fields, in tuples)."""

    @property
    def order_id(self) -> str: ...
    @property
    def status_type(self) -> StatusType: ...
    @property
    def from_status(self) -> StatusView | None: ...
    @property
    def to_status(self) -> StatusView: ...
    @property
    def order(self) -> OrderView: ...


def condition_failure(condition: Condition, order: OrderView, region: str) -> Reason | None:
    """Why `condition` does not hold for `order`, or None when it holds."""
    if isinstance(condition, OrderStatusCondition):
        return _status_failure(condition, order)
    if isinstance(condition, HasPhoneCondition):
        try:
            sms_phone(order.customer.phone, region)
        except PhoneProblem as problem:
            return Reason(code=problem.reason, detail=problem.detail)
        return None
    if isinstance(condition, SmsConsentCondition):
        return None if order.customer.sms_consent else Reason(code="no_sms_consent", detail="no SMS consent")
    return _amount_failure(condition, order)


def _status_failure(condition: OrderStatusCondition, order: OrderView) -> Reason | None:
    current = order.statuses.of(condition.status_type)
    code = current.code if current else None
    holds = code in condition.codes if condition.op in ("eq", "in") else code not in condition.codes
    if holds:
        return None
    wanted = {"eq": "wanted", "in": "wanted one of", "not_in": "wanted none of"}[condition.op]
    detail = f"{condition.status_type} status is {code or 'none'}; {wanted} {', '.join(sorted(condition.codes))}"
    return Reason(code=f"{condition.status_type}_status", detail=detail)


def _amount_failure(condition: AmountCondition, order: OrderView) -> Reason | None:
    if condition.currency and order.currency != condition.currency:
        return Reason(code="currency_mismatch", detail=f"amount is in {order.currency}, not {condition.currency}")
    if condition.min is not None and order.amount < condition.min:
        return Reason(code="amount_below_min", detail=f"amount {order.amount} is below {condition.min}")
    if condition.max is not None and order.amount > condition.max:
        return Reason(code="amount_above_max", detail=f"amount {order.amount} is above {condition.max}")
    return None


def filter_failures(campaign: CampaignDefinition, order: OrderView, region: str) -> list[Reason]:
    """Every condition that fails, each with its reason; empty when the customer passes the filter."""
    failures = []
    for n, condition in enumerate(campaign.filters):
        reason = condition_failure(condition, order, region)
        if reason is not None:
            failures.append(reason.model_copy(update={"condition": n}))
    return failures


# Each of TEMPLATE_VARIABLES, for a change.
TEMPLATE_VALUES: dict[str, Callable[[ChangeView], str]] = {
    "customer.name": lambda e: e.order.customer.name or "",  # `| default: "friend"` covers a missing name
    "order.id": lambda e: e.order.order_id,
    "order.amount": lambda e: format(e.order.amount, "f"),
    "order.currency": lambda e: e.order.currency,
    "from_status.code": lambda e: e.from_status.code if e.from_status else "",
    "from_status.name": lambda e: e.from_status.name if e.from_status else "",
    "to_status.code": lambda e: e.to_status.code,
    "to_status.name": lambda e: e.to_status.name,
    "status_type": lambda e: str(e.status_type),
}


def template_variables(event: ChangeView) -> dict[str, Any]:
    """The variables as Liquid reads them: {"customer": {"name": ...}, ..., "status_type": ...}."""
    variables: dict[str, Any] = {}
    for path, value_of in TEMPLATE_VALUES.items():
        *groups, name = path.split(".")
        scope = variables
        for group in groups:
            scope = scope.setdefault(group, {})
        scope[name] = value_of(event)
    return variables


def render_text(template: str, event: ChangeView) -> str:
    """The SMS text `template` gives for `event`; raises TemplateProblem when it cannot be sent as is. A plain
    template computes only the variables it uses (a backtest renders hundreds of thousands of texts)."""
    text = render_plain(template, lambda path: TEMPLATE_VALUES[path](event))
    if text is None:
        text = render(template, template_variables(event))
    if not text:
        raise TemplateProblem(1, "the template rendered an empty text")
    if len(text) > MAX_SMS_CHARACTERS:
        raise TemplateProblem(1, f"the text has {len(text)} characters; at most {MAX_SMS_CHARACTERS}")
    return text


def send_window(campaign: CampaignDefinition, partner: PartnerSettings) -> SendWindow | None:
    if campaign.quiet_hours == "deliver_immediately":
        return None
    if campaign.quiet_hours == "partner_default":
        return partner.quiet_hours
    return campaign.quiet_hours


def is_capped(campaign: CampaignDefinition, history: History, partner: PartnerSettings) -> bool:
    cap = partner.frequency_cap
    return not campaign.transactional and cap is not None and history.recent_marketing_sms >= cap.max_messages


def cap_window_start(now: datetime, partner: PartnerSettings) -> datetime | None:
    """Where the frequency cap's rolling window begins; None when the partner has no cap."""
    cap = partner.frequency_cap
    return now - timedelta(hours=cap.window_hours) if cap else None


def triggered_by(campaign: CampaignDefinition, event: ChangeView) -> bool:
    before = event.from_status.code if event.from_status else None
    return campaign.trigger.matches(event.status_type, before, event.to_status.code)


def evaluate(campaign: CampaignDefinition, event: ChangeView, history: History, ctx: Context) -> Decision:
    """What the campaign does about one status change, in the order the checks are cheapest to explain."""
    if not triggered_by(campaign, event):
        before = event.from_status.code if event.from_status else "none"
        detail = f"{event.status_type} {before} -> {event.to_status.code} is not the trigger"
        return Decision(Outcome.NOT_TRIGGERED, [Reason(code="not_triggered", detail=detail)])
    return evaluate_triggered(campaign, event, history, ctx)


def evaluate_triggered(campaign: CampaignDefinition, event: ChangeView, history: History, ctx: Context) -> Decision:
    """`evaluate` for a change its caller found to match the trigger (`triggered_by`)."""
    if campaign.reentry == Reentry.ONCE_PER_ORDER and history.fired_for_order:
        reason = Reason(code="once_per_order", detail=f"already sent for order {event.order_id}")
        return Decision(Outcome.OUTSIDE_REENTRY, [reason])
    failures = filter_failures(campaign, event.order, ctx.default_region)
    if failures:
        return Decision(Outcome.FILTERED_OUT, failures)
    if campaign.is_journey:  # its SMS are decided as each send_sms step fires (campaigns.journeys)
        return Decision(Outcome.ENTERED)
    return plan_sms(campaign, campaign.template or "", event, history, ctx)


def plan_sms(
    campaign: CampaignDefinition, template: str, event: ChangeView, history: History, ctx: Context
) -> Decision:
    """Whether and how one SMS goes now: a phone, the frequency cap, a sendable text, quiet hours."""
    try:
        phone = sms_phone(event.order.customer.phone, ctx.default_region)
    except PhoneProblem as problem:
        return Decision(Outcome.FILTERED_OUT, [Reason(code=problem.reason, detail=problem.detail)])
    if is_capped(campaign, history, ctx.partner):
        cap = ctx.partner.frequency_cap
        assert cap is not None
        detail = f"{history.recent_marketing_sms} SMS in the last {cap.window_hours} h; cap {cap.max_messages}"
        return Decision(Outcome.CAPPED, [Reason(code="frequency_cap", detail=detail)])
    try:
        text = render_text(template, event)
    except TemplateProblem as problem:
        code = "template_limit" if isinstance(problem, TemplateLimit) else "template"
        return Decision(Outcome.FAILED, [Reason(code=code, detail=str(problem))])
    zone = recipient_zone(phone, ctx.default_zone)
    later = not_before(ctx.now, send_window(campaign, ctx.partner), zone)
    return Decision(Outcome.FIRED, sms=PlannedSms(phone.e164, text, sms_parts(text), zone, later))


def send_command(
    campaign: Campaign, event_id: str, event: OrderStatusChanged, sms: PlannedSms, now: datetime, ttl: timedelta
) -> SendSms:
    """The command for the notifier; its id is deterministic, so a redelivered event can never send twice."""
    return sms_command(
        send_sms_id(campaign.id, event_id), campaign.partner_id, campaign.id, event, sms,
        sender=campaign.sender, transactional=campaign.transactional, now=now, ttl=ttl,
    )  # fmt: skip


def sms_command(
    command_id: str, partner_id: str, campaign_id: str, change: OrderStatusChanged, sms: PlannedSms, *,
    sender: str | None, transactional: bool, now: datetime, ttl: timedelta,
) -> SendSms:  # fmt: skip
    """A planned SMS about `change`'s order as the notifier's command (a one-step campaign's, or a journey's step's).

    The message stays valid for `ttl` from the moment it may first be sent (after quiet hours, if held).
    """
    return SendSms(
        idempotency_key=command_id,
        partner_id=partner_id,
        campaign_id=campaign_id,
        order_id=change.order_id,
        customer_id=change.order.customer.id,
        phone=sms.phone,
        text=sms.text,
        sender=sender,
        requested_at=now,
        expires_at=(sms.not_before or now) + ttl,
        not_before=sms.not_before,
        transactional=transactional,
        # The notifier enforces consent for marketing SMS whatever the filters said; it needs the snapshot's (for a
        # journey's step, the latest change's: consent as it is when the step fires).
        sms_consent=change.order.customer.sms_consent,
    )


# --- preview ------------------------------------------------------------------------------------


class PreviewOrder(BaseModel):
    """An order as a marketer imagines it for a dry run: statuses by code, the rest as in the snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Identifier = "preview"
    amount: Money
    currency: CurrencyCode
    customer: Customer
    statuses: StatusCodes = Field(
        default_factory=StatusCodes, description="Current codes per type; the trigger's type is set to `to`."
    )
    placed_at: UtcDatetime | None = None  # the snapshot's own type: an instant it refuses is the request's 422


def preview_event(
    order: PreviewOrder,
    before: StatusDefinition | None,
    after: StatusDefinition,
    statuses: Mapping[StatusType, StatusDefinition],
    now: datetime,
) -> OrderStatusChanged:
    """The event the orders service would publish for this change (`statuses`: the order's other current ones)."""
    current = {str(t): d.ref() for t, d in statuses.items()} | {str(after.type): after.ref()}
    snapshot = OrderSnapshot(
        order_id=order.order_id,
        statuses=CurrentStatuses.model_validate(current),
        amount=order.amount,
        currency=order.currency,
        customer=order.customer,
        placed_at=order.placed_at or now,
    )
    return OrderStatusChanged(
        order_id=order.order_id,
        status_type=after.type,
        from_status=before.ref() if before else None,
        to_status=after.ref(),
        to_include_in_analytics=after.include_in_analytics,
        sequence=1,
        order=snapshot,
        occurred_at=now,
    )


# --- the in-memory index -------------------------------------------------------------------------

IndexKey = tuple[str, StatusType, str]  # partner, status type, target code


class CampaignIndex:
    """Active campaigns by (partner, status type, target code): what the consumer looks up per event.

    Rebuilt from the database at start and updated on every campaign write (see services), so evaluating
    an event never scans campaigns that cannot match.
    """

    def __init__(self) -> None:
        self._by_key: dict[IndexKey, dict[str, Campaign]] = defaultdict(dict)
        self._keys_of: dict[str, list[IndexKey]] = {}
        self._versions: dict[str, int] = {}

    def replace_all(self, campaigns: Iterable[Campaign]) -> None:
        self._by_key.clear()
        self._keys_of.clear()
        self._versions.clear()
        for campaign in campaigns:
            self.put(campaign)

    def put(self, campaign: Campaign) -> None:
        """Index `campaign` as it is now: an inactive one disappears, an edited one moves.

        Writes reach the index twice (directly, and through the database notification every instance
        hears), in either order; an older version than the one held is ignored.
        """
        if self._versions.get(campaign.id, 0) > campaign.version:
            return
        self._versions[campaign.id] = campaign.version
        for key in self._keys_of.pop(campaign.id, []):
            self._by_key[key].pop(campaign.id, None)
        if campaign.state != CampaignState.ACTIVE:
            return
        trigger = campaign.trigger
        keys = [(campaign.partner_id, trigger.status_type, code) for code in trigger.to_codes]
        for key in keys:
            self._by_key[key][campaign.id] = campaign
        self._keys_of[campaign.id] = keys

    def matching(self, partner_id: str, status_type: StatusType, to_code: str) -> list[Campaign]:
        return list(self._by_key.get((partner_id, status_type, to_code), {}).values())

    def __len__(self) -> int:
        return len(self._keys_of)
