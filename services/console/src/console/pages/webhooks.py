"""A partner's admin: the partner's webhook endpoints (through the webhooks service's API, `/v1/webhooks`): the list
with each endpoint's state and why the platform disabled it, create and edit (with the endpoint's ETag), the signing
secret shown once, rotation, deletion, and per endpoint the delivery log with its resends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form
from fastapi.responses import Response
from starlette.datastructures import FormData

from console.backends import BackendProblem, Service, segment
from console.i18n import Formats
from console.web import N_, Admin, Page, flash

router = APIRouter(prefix="/settings/webhooks")

NO_STORE = {"Cache-Control": "no-store"}  # an answer showing a secret: no copy kept by the browser or a proxy
ENDPOINTS = "/v1/webhooks/endpoints"
LOG_PAGE_SIZE = 20
MAX_URL_LENGTH = 2048  # the webhooks service's limit: a longer URL is refused here, in words, before it is sent

EVENT_TYPES = {
    "order.status_changed": N_("An order's status changed"),
    "sms.dispatched": N_("An SMS was sent"),
    "sms.delivered": N_("An SMS was delivered"),
    "sms.failed": N_("An SMS could not be delivered"),
    "status_definition.changed": N_("A status in the settings changed"),
}
MESSAGE_STATES = {
    "pending": N_("Waiting to be sent"),
    "succeeded": N_("Delivered"),
    "failed": N_("Given up"),
}
# What the webhooks service says of a URL it refuses, by the error's type, in words that say what to do.
URL_REFUSALS = {
    "value_error": N_(
        "Enter the full address of your receiver, starting with https:// (or http://), such as "
        "https://shop.example/hooks, with no user name, password or # part."
    ),
    "target_not_allowed": N_(
        "This address leads into a private network or to the platform's own machines (such as 10.x, 192.168.x, "
        "127.0.0.1 or a cloud metadata address), which the platform never calls. Enter the public internet address "
        "of your receiver."
    ),
    "target_unresolvable": N_("No host of this name exists on the internet: check the address for a typo."),
}
URL_TOO_LONG = N_("Too long: an address has at most 2048 characters.")
NO_EVENT_TYPE = N_("Choose at least one event.")
BAD_SINCE = N_("Enter a date and time, such as 2026-12-01 09:00.")
CHANGED_BY_SOMEONE_ELSE = N_(
    "This endpoint was changed by someone else since you opened it, so nothing was saved. Reload to see the change, "
    "then make yours again."
)


# --- what an endpoint's state says -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointState:
    """An endpoint's state in one word (`kind`: enabled, failing, disabled) and, for the last two, why, in words;
    while a failing endpoint is paused, since when it fails and when the next attempt (its probe) goes."""

    kind: str
    label: str
    why: str = ""
    next_attempt: str = ""


def endpoint_state(endpoint: dict[str, Any], fmt: Formats, gettext: Callable[..., str], now: datetime) -> EndpointState:
    """Enabled; enabled but failing (since when, that the platform disables it after 5 days, and while it is paused
    when the next attempt goes); or disabled, by an admin or by the platform, and why (the endpoint answered 410 Gone,
    or every delivery failed for days)."""
    if endpoint["enabled"]:
        if endpoint.get("failing_since"):
            since = fmt.when(endpoint["failing_since"])
            why = gettext(
                "Every delivery has failed since %(since)s. If none succeeds for 5 days, the platform disables the "
                "endpoint.",
                since=since,
            )
            return EndpointState("failing", gettext("Failing"), why, _next_attempt(endpoint, fmt, gettext, now))
        return EndpointState("enabled", gettext("Enabled"))
    cause, reason, disabled_at = (
        endpoint.get("disabled_cause"),
        endpoint.get("disabled_reason"),
        endpoint.get("disabled_at"),
    )
    if cause == "by_partner" or not (reason and disabled_at):
        return EndpointState("disabled", gettext("Disabled"), gettext("An admin disabled it: nothing is sent to it."))
    when = fmt.when(disabled_at)
    if cause == "gone_410":
        why = gettext(
            "The platform disabled it on %(when)s: the endpoint answered 410 Gone, which says it no longer exists.",
            when=when,
        )
    elif cause == "failing_5_days" and endpoint.get("failing_since"):
        failing_since = datetime.fromisoformat(endpoint["failing_since"])
        span = (datetime.fromisoformat(disabled_at) - failing_since).total_seconds()
        why = gettext(
            "The platform disabled it on %(when)s: every delivery failed from %(since)s on, for %(span)s.",
            when=when,
            since=fmt.when(failing_since),
            span=fmt.duration(span),
        )
    else:
        why = gettext("The platform disabled it on %(when)s: %(reason)s.", when=when, reason=reason)
    return EndpointState("disabled", gettext("Disabled"), why)


def _next_attempt(endpoint: dict[str, Any], fmt: Formats, gettext: Callable[..., str], now: datetime) -> str:
    """While the failing endpoint is paused (a circuit breaker, docs/webhooks.md), when its next attempt goes; once the
    pause is over the next due message goes at once, and there is no time to say."""
    paused_until = endpoint.get("paused_until")
    if not paused_until or datetime.fromisoformat(paused_until) <= now:
        return ""
    return gettext(
        "Failing since %(since)s; next attempt at %(next)s.",
        since=fmt.when(endpoint["failing_since"]),
        next=fmt.when(paused_until),
    )


# --- the endpoint form -------------------------------------------------------------------------------------------


@dataclass
class EndpointForm:
    url: str = ""
    event_types: list[str] = field(default_factory=lambda: ["order.status_changed"])
    status_type: str = ""
    description: str = ""
    enabled: bool = True
    version: str = ""

    @classmethod
    def parse(cls, form: FormData) -> EndpointForm:
        return cls(
            url=str(form.get("url", "")).strip(),
            event_types=[str(value) for value in form.getlist("event_types")],
            status_type=str(form.get("status_type", "")),
            description=str(form.get("description", "")).strip(),
            enabled=form.get("enabled") == "true",
            version=str(form.get("version", "")),
        )

    @classmethod
    def of(cls, endpoint: dict[str, Any]) -> EndpointForm:
        return cls(
            url=endpoint["url"],
            event_types=list(endpoint["event_types"]),
            status_type=endpoint.get("status_type") or "",
            description=endpoint.get("description") or "",
            enabled=endpoint["enabled"],
            version=str(endpoint["version"]),
        )

    def body(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "event_types": self.event_types,
            "status_type": self.status_type or None,
            "description": self.description or None,
            "enabled": self.enabled,
        }

    def refusals(self) -> dict[str, str]:
        """What the console says itself before asking the service (untranslated: the caller translates)."""
        errors: dict[str, str] = {}
        if len(self.url) > MAX_URL_LENGTH:
            errors["url"] = URL_TOO_LONG
        if not self.event_types:
            errors["event_types"] = NO_EVENT_TYPE
        return errors


def endpoint_errors(page: Page, refused: BackendProblem) -> dict[str, str]:
    """The service's refusal as messages by form field ('' for the whole form), in the user's words."""
    if refused.status == 412:
        return {"": page.gettext(CHANGED_BY_SOMEONE_ELSE)}
    errors: dict[str, str] = {}
    for name, message in page.field_errors(refused).items():
        errors.setdefault(name.split(".")[0], message)  # event_types.0: beside the event types
    for error in refused.errors():
        kind = str(error.get("type", ""))
        if str(error.get("field", "")) == "url" and kind in URL_REFUSALS:
            errors["url"] = page.gettext(URL_REFUSALS[kind])
    return errors or {"": refused.detail}


def _labels(page: Page) -> dict[str, Any]:
    return {
        "event_labels": {key: page.gettext(text) for key, text in EVENT_TYPES.items()},
        "state_labels": {key: page.gettext(text) for key, text in MESSAGE_STATES.items()},
    }


def _form_page(
    page: Page, form: EndpointForm, *, endpoint_id: str | None, errors: dict[str, str], status_code: int = 200
) -> Response:
    return page.render(
        "webhooks/form.html", status_code, form=form, endpoint_id=endpoint_id, errors=errors, **_labels(page)
    )


def _path(endpoint_id: str) -> str:
    return f"{ENDPOINTS}/{segment(endpoint_id)}"


def if_match(version: str) -> str:
    """The ETag of the version the form was read at. A version that is no number (a form tampered with) is sent as
    one no endpoint has, so the service answers "changed meanwhile" rather than a header carrying anything typed."""
    return f'"{version}"' if version.isascii() and version.isdigit() else '"none"'


# --- the list, create, the secret --------------------------------------------------------------------------------


@router.get("")
async def endpoints(page: Admin) -> Response:
    items = await page.api.pages(Service.WEBHOOKS, ENDPOINTS, limit=500)
    now = datetime.now(UTC)
    states = {e["id"]: endpoint_state(e, page.fmt, page.gettext, now) for e in items}
    return page.render("webhooks/list.html", endpoints=items, states=states, **_labels(page))


@router.get("/new")
async def new_endpoint(page: Admin) -> Response:
    return _form_page(page, EndpointForm(), endpoint_id=None, errors={})


@router.post("")
async def create_endpoint(page: Admin) -> Response:
    form = EndpointForm.parse(await page.request.form())
    if refusals := form.refusals():
        errors = {name: page.gettext(text) for name, text in refusals.items()}
        return _form_page(page, form, endpoint_id=None, errors=errors, status_code=422)
    try:
        created = (await page.api.call(Service.WEBHOOKS, "POST", ENDPOINTS, json=form.body())).body
    except BackendProblem as refused:
        errors = endpoint_errors(page, refused)
        return _form_page(page, form, endpoint_id=None, errors=errors, status_code=refused.status)
    return page.render("webhooks/secret.html", headers=NO_STORE, endpoint=created, secret=created["secret"])


@router.post("/{endpoint_id}/rotate")
async def rotate(page: Admin, endpoint_id: str) -> Response:
    rotated = (await page.api.call(Service.WEBHOOKS, "POST", f"{_path(endpoint_id)}/rotate-secret")).body
    endpoint = await page.api.get(Service.WEBHOOKS, _path(endpoint_id))
    return page.render(
        "webhooks/secret.html",
        headers=NO_STORE,
        endpoint=endpoint,
        secret=rotated["secret"],
        rotated=True,
        previous_until=rotated.get("previous_secret_expires_at"),
    )


# --- one endpoint and its delivery log ---------------------------------------------------------------------------


def _since_default(page: Page) -> str:
    """A day ago, as a datetime-local field shows it in the user's time zone."""
    day_ago = datetime.now(ZoneInfo(page.user.time_zone)) - timedelta(days=1)
    return day_ago.strftime("%Y-%m-%dT%H:%M")


async def _delivery_log(page: Page, endpoint_id: str, state: str, cursor: str) -> dict[str, Any]:
    log = await page.api.get(
        Service.WEBHOOKS,
        f"{_path(endpoint_id)}/messages",
        state=state if state in MESSAGE_STATES else None,
        cursor=cursor or None,
        limit=LOG_PAGE_SIZE,
    )
    return {"messages": log["items"], "next_cursor": log.get("next_cursor"), "state": state}


async def _endpoint_page(
    page: Page,
    endpoint_id: str,
    *,
    state: str = "",
    cursor: str = "",
    errors: dict[str, str] | None = None,
    since: str = "",
    status_code: int = 200,
) -> Response:
    endpoint = await page.api.get(Service.WEBHOOKS, _path(endpoint_id))
    return page.render(
        "webhooks/endpoint.html",
        status_code,
        endpoint=endpoint,
        endpoint_state=endpoint_state(endpoint, page.fmt, page.gettext, datetime.now(UTC)),
        errors=errors or {},
        since=since or _since_default(page),
        **await _delivery_log(page, endpoint_id, state, cursor),
        **_labels(page),
    )


@router.get("/{endpoint_id}")
async def endpoint(page: Admin, endpoint_id: str, state: str = "", cursor: str = "") -> Response:
    return await _endpoint_page(page, endpoint_id, state=state, cursor=cursor)


@router.get("/{endpoint_id}/log")
async def delivery_log(page: Admin, endpoint_id: str, state: str = "", cursor: str = "") -> Response:
    """The delivery log alone (the state filter's htmx answer, swapped into the endpoint's page)."""
    log = await _delivery_log(page, endpoint_id, state, cursor)
    return page.render("webhooks/log.html", endpoint={"id": endpoint_id}, **log, **_labels(page))


@router.get("/{endpoint_id}/edit")
async def edit_endpoint(page: Admin, endpoint_id: str) -> Response:
    endpoint = await page.api.get(Service.WEBHOOKS, _path(endpoint_id))
    return _form_page(page, EndpointForm.of(endpoint), endpoint_id=endpoint_id, errors={})


@router.post("/{endpoint_id}")
async def update_endpoint(page: Admin, endpoint_id: str) -> Response:
    form = EndpointForm.parse(await page.request.form())
    if refusals := form.refusals():
        errors = {name: page.gettext(text) for name, text in refusals.items()}
        return _form_page(page, form, endpoint_id=endpoint_id, errors=errors, status_code=422)
    try:
        await page.api.call(
            Service.WEBHOOKS, "PATCH", _path(endpoint_id), json=form.body(), etag=if_match(form.version)
        )
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        errors = endpoint_errors(page, refused)
        status_code = 409 if refused.status == 412 else refused.status
        return _form_page(page, form, endpoint_id=endpoint_id, errors=errors, status_code=status_code)
    flash(page.request, page.gettext("The endpoint is saved."))
    return page.redirect(f"/settings/webhooks/{endpoint_id}")


async def _switch(page: Page, endpoint_id: str, version: str, enabled: bool) -> Response:
    try:
        await page.api.call(
            Service.WEBHOOKS, "PATCH", _path(endpoint_id), json={"enabled": enabled}, etag=if_match(version)
        )
    except BackendProblem as refused:
        if refused.status != 412:
            raise
        flash(page.request, page.gettext(CHANGED_BY_SOMEONE_ELSE), "error")
        return page.redirect(f"/settings/webhooks/{endpoint_id}")
    if enabled:
        message = page.gettext("The endpoint is enabled again: the messages still waiting go out now.")
    else:
        message = page.gettext("The endpoint is disabled: nothing is sent to it until it is enabled again.")
    flash(page.request, message)
    return page.redirect(f"/settings/webhooks/{endpoint_id}")


@router.post("/{endpoint_id}/enable")
async def enable(page: Admin, endpoint_id: str, version: Annotated[str, Form()] = "") -> Response:
    return await _switch(page, endpoint_id, version, enabled=True)


@router.post("/{endpoint_id}/disable")
async def disable(page: Admin, endpoint_id: str, version: Annotated[str, Form()] = "") -> Response:
    return await _switch(page, endpoint_id, version, enabled=False)


@router.post("/{endpoint_id}/delete")
async def delete(page: Admin, endpoint_id: str) -> Response:
    await page.api.call(Service.WEBHOOKS, "DELETE", _path(endpoint_id))
    flash(page.request, page.gettext("The endpoint is deleted, with its delivery log."))
    return page.redirect("/settings/webhooks")


@router.post("/{endpoint_id}/messages/{message_id}/resend")
async def resend(page: Admin, endpoint_id: str, message_id: str) -> Response:
    path = f"{_path(endpoint_id)}/messages/{segment(message_id)}/resend"
    await page.api.call(Service.WEBHOOKS, "POST", path)
    flash(page.request, page.gettext("The message is sent again now, with the same webhook-id."))
    return page.redirect(f"/settings/webhooks/{endpoint_id}")


def since_of(value: str, time_zone: str) -> datetime:
    """A datetime-local field's value (the user's time zone) as an instant in UTC; ValueError when it is none (or
    one that UTC cannot hold, such as the first minutes of year 1 east of Greenwich)."""
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(time_zone))
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(str(exc)) from exc


@router.post("/{endpoint_id}/resend-failed")
async def resend_failed(page: Admin, endpoint_id: str, since: Annotated[str, Form()] = "") -> Response:
    try:
        moment = since_of(since, page.user.time_zone)
    except ValueError:
        errors = {"since": page.gettext(BAD_SINCE)}
        return await _endpoint_page(page, endpoint_id, errors=errors, since=since, status_code=422)
    path = f"{_path(endpoint_id)}/resend-failed"
    try:
        resent = (await page.api.call(Service.WEBHOOKS, "POST", path, json={"since": moment.isoformat()})).body
    except BackendProblem as refused:
        if refused.status != 422:
            raise
        errors = {"since": page.gettext(BAD_SINCE)}
        return await _endpoint_page(page, endpoint_id, errors=errors, since=since, status_code=422)
    flash(page.request, page.gettext("Messages given up on, sent again now: %(count)s.", count=resent["resent"]))
    return page.redirect(f"/settings/webhooks/{endpoint_id}")
