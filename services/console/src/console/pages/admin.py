"""A partner's admin: the partner's users (invite with a one-time password, change a role, disable and enable, the
record of changes) and API clients (create, rotate the secret, revoke, their audit; through identity's API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import BackendProblem, Service, segment
from console.domain import InvalidUser
from console.services import NoSuchUser, PartnerAdmin
from console.web import N_, Admin, NotFound, Page, end_session, flash
from contracts.identity import Scope

router = APIRouter(prefix="/settings")

# What an answer showing a secret or a one-time password carries: no copy kept by the browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}
MAX_ACTOR_LENGTH = 200  # identity's limit on X-Actor

# --- users ---------------------------------------------------------------------------------------------------------


def _admin(page: Page) -> PartnerAdmin:
    return PartnerAdmin(page.request.app.state.pool, page.user)


async def _users_page(
    page: Page,
    *,
    errors: dict[str, str] | None = None,
    row_errors: dict[int, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    admin = _admin(page)
    return page.render(
        "admin/users.html",
        status_code,
        users=await admin.users(),
        changes=await admin.changes(),
        errors=errors or {},
        row_errors=row_errors or {},
        form=form or {"email": "", "display_name": "", "role": "viewer"},
    )


@router.get("/users")
async def users(page: Admin) -> Response:
    return await _users_page(page)


@router.post("/users")
async def invite(
    page: Admin,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
) -> Response:
    try:
        invited = await _admin(page).invite(email, role, display_name)
    except InvalidUser as refused:
        form = {"email": email, "display_name": display_name, "role": role}
        return await _users_page(page, errors={refused.field: page.gettext(str(refused))}, form=form, status_code=422)
    return page.render("admin/invited.html", headers=NO_STORE, invited=invited.user, password=invited.password)


@router.post("/users/{user_id}/role")
async def change_role(page: Admin, user_id: int, role: Annotated[str, Form()] = "") -> Response:
    try:
        target = await _admin(page).change_role(user_id, role)
    except NoSuchUser:
        raise NotFound() from None
    except InvalidUser as refused:
        return await _users_page(page, row_errors={user_id: page.gettext(str(refused))}, status_code=409)
    flash(page.request, page.gettext("%(email)s's role is changed.", email=target.user.email))
    return page.redirect("/" if user_id == page.user.id else "/settings/users")


@router.post("/users/{user_id}/disable")
async def disable(page: Admin, user_id: int) -> Response:
    try:
        await _admin(page).disable(user_id)
    except NoSuchUser:
        raise NotFound() from None
    except InvalidUser as refused:
        return await _users_page(page, row_errors={user_id: page.gettext(str(refused))}, status_code=409)
    if user_id == page.user.id:  # their own sessions ended with the others: this one too
        await end_session(page.request)
        return page.redirect("/login")
    flash(page.request, page.gettext("The user is disabled: their sessions have ended and they cannot sign in."))
    return page.redirect("/settings/users")


@router.post("/users/{user_id}/enable")
async def enable(page: Admin, user_id: int) -> Response:
    try:
        await _admin(page).enable(user_id)
    except NoSuchUser:
        raise NotFound() from None
    flash(page.request, page.gettext("The user is enabled: they can sign in again."))
    return page.redirect("/settings/users")


# --- API clients ---------------------------------------------------------------------------------------------------

RESOURCES = {
    "statuses": N_("Order statuses"),
    "orders": N_("Orders"),
    "campaigns": N_("Campaigns"),
    "messages": N_("Messages"),
    "webhooks": N_("Webhooks"),
    "clients": N_("API clients"),
}
ACTIONS = {"read": N_("read"), "write": N_("change"), "manage": N_("manage")}
NAME_TAKEN = N_("An API client of this name exists already: choose another name.")
BAD_DATE = N_("Enter a date, such as 2030-12-31.")
DATE_PASSED = N_("Choose a day after today.")
NO_SCOPE = N_("Choose at least one permission.")
UNKNOWN_SCOPE = N_("Choose among the permissions listed.")


def scope_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """The scopes by resource, in the order of `Scope`: [(resource, [(scope, action)])]."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for scope in Scope:
        resource, action = scope.value.split(":")
        groups.setdefault(resource, []).append((scope.value, action))
    return list(groups.items())


def _actor(page: Page) -> dict[str, str]:
    """Who acts, for identity's audit: the signed-in user's email (identity takes one printable line of 200
    characters at most; an address that is not one is named by the user's id)."""
    email = page.user.email
    printable = email.isprintable() and len(email) <= MAX_ACTOR_LENGTH
    return {"X-Actor": email if printable else f"console-user:{page.user.id}"}


def _labels(page: Page) -> dict[str, Any]:
    return {
        "resources": {key: page.gettext(text) for key, text in RESOURCES.items()},
        "actions": {key: page.gettext(text) for key, text in ACTIONS.items()},
        "groups": scope_groups(),
    }


@router.get("/api-clients")
async def clients(page: Admin, revoked: bool = False) -> Response:
    items = await page.api.pages(Service.IDENTITY, "/v1/clients", include_revoked="true" if revoked else None)
    return page.render("admin/clients.html", clients=items, revoked=revoked, **_labels(page))


def _new_client_form(page: Page, *, errors: dict[str, str], form: dict[str, Any], status_code: int = 200) -> Response:
    return page.render("admin/client_new.html", status_code, errors=errors, form=form, **_labels(page))


@router.get("/api-clients/new")
async def new_client(page: Admin) -> Response:
    return _new_client_form(page, errors={}, form={"name": "", "scopes": [], "expires_on": ""})


def expiry_of(expires_on: str, time_zone: str, today: date) -> datetime | None:
    """The end of the chosen day in the user's time zone (the client works all that day), or None for no expiry.
    Raises InvalidUser for something that is not a date, or a day not after today."""
    if not expires_on.strip():
        return None
    try:
        day = date.fromisoformat(expires_on.strip())
    except ValueError:
        raise InvalidUser("expires_on", BAD_DATE) from None
    if day <= today:
        raise InvalidUser("expires_on", DATE_PASSED)
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(time_zone))


def _checked_scopes(scopes: Sequence[str]) -> list[str]:
    if not scopes:
        raise InvalidUser("scopes", NO_SCOPE)
    if not set(scopes) <= {s.value for s in Scope}:
        raise InvalidUser("scopes", UNKNOWN_SCOPE)
    return sorted(set(scopes))


@router.post("/api-clients")
async def create_client(
    page: Admin,
    name: Annotated[str, Form()] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    expires_on: Annotated[str, Form()] = "",
) -> Response:
    form = {"name": name, "scopes": scopes or [], "expires_on": expires_on}
    today = datetime.now(ZoneInfo(page.user.time_zone)).date()
    try:
        body = {
            "name": name,
            "scopes": _checked_scopes(scopes or []),
            "expires_at": (e.isoformat() if (e := expiry_of(expires_on, page.user.time_zone, today)) else None),
        }
        created = await page.api.call(Service.IDENTITY, "POST", "/v1/clients", json=body, headers=_actor(page))
    except InvalidUser as refused:
        return _new_client_form(page, errors={refused.field: page.gettext(str(refused))}, form=form, status_code=422)
    except BackendProblem as refused:
        if refused.status not in (409, 422):
            raise
        return _new_client_form(page, errors=_client_errors(page, refused), form=form, status_code=refused.status)
    return page.render("admin/client_secret.html", headers=NO_STORE, client=created.body, rotated=False)


def _client_errors(page: Page, refused: BackendProblem) -> dict[str, str]:
    if refused.code == "client_name_taken":
        return {"name": page.gettext(NAME_TAKEN)}
    errors = page.field_errors(refused)
    if "expires_at" in errors:  # the form's field is a day
        errors["expires_on"] = page.gettext(DATE_PASSED)
    return errors or {"name": refused.detail}


@router.get("/api-clients/{client_id}")
async def client(page: Admin, client_id: str) -> Response:
    path = f"/v1/clients/{segment(client_id)}"
    found = await page.api.get(Service.IDENTITY, path)
    audit = await page.api.pages(Service.IDENTITY, f"{path}/audit")
    return page.render("admin/client.html", client=found, audit=audit, **_labels(page))


@router.post("/api-clients/{client_id}/rotate")
async def rotate(page: Admin, client_id: str) -> Response:
    path = f"/v1/clients/{segment(client_id)}/rotate-secret"
    try:
        rotated = await page.api.call(Service.IDENTITY, "POST", path, headers=_actor(page))
    except BackendProblem as refused:
        if refused.code != "client_revoked":
            raise
        flash(page.request, page.gettext("A revoked API client has no secret to rotate."), "error")
        return page.redirect(f"/settings/api-clients/{client_id}")
    return page.render("admin/client_secret.html", headers=NO_STORE, client=rotated.body, rotated=True)


@router.post("/api-clients/{client_id}/revoke")
async def revoke(page: Admin, client_id: str) -> Response:
    path = f"/v1/clients/{segment(client_id)}/revoke"
    revoked = await page.api.call(Service.IDENTITY, "POST", path, headers=_actor(page))
    flash(
        page.request,
        page.gettext(
            "%(name)s is revoked: its secrets get no token, and its tokens are refused.", name=revoked.body["name"]
        ),
    )
    return page.redirect(f"/settings/api-clients/{client_id}")
