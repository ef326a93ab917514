"""Signing in (throttled) and out, ending every session, the one-time password's replacement, and the user's
language and time zone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from console.domain import LANGUAGES, PASSWORDS_DIFFER, InvalidUser, Role
from console.web import (
    AnyUser,
    end_session,
    flash,
    redirect,
    render,
    session_of,
    sessions_of,
    start_session,
    users_of,
)

router = APIRouter()

COMMON_TIME_ZONES = (
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
    "Europe/London",
    "Europe/Berlin",
    "UTC",
)


def _safe_next(url: str | None) -> str:
    """Only a path of this site: `next` must never send a user elsewhere after signing in."""
    return url if url and url.startswith("/") and not url.startswith("//") else "/"


@router.get("/")
async def home(page: AnyUser) -> Response:
    return page.redirect("/ops" if page.user.role is Role.OPS else "/settings/statuses")


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", next=_safe_next(next), full_page=True)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """401 for a wrong email or password; 429 with Retry-After while the account or the address must wait after
    too many failures (the password is not even checked then); the page says how long."""
    address = request.client.host if request.client else ""
    attempt = await users_of(request).sign_in(email, password, address)
    if attempt.user is None:
        headers = {"Retry-After": str(attempt.retry_after_s)} if attempt.retry_after_s else None
        status = 429 if attempt.throttled else 401
        return render(
            request,
            "login.html",
            status,
            headers,
            next=_safe_next(next),
            full_page=True,
            email=email,
            failed=not attempt.throttled,
            disabled=attempt.disabled,
            retry_after_s=attempt.retry_after_s,
        )
    await start_session(request, attempt.user)
    if attempt.user.must_change_password:
        return redirect(request, "/account/password")
    return redirect(request, _safe_next(next))


@router.post("/logout")
async def logout(request: Request) -> Response:
    """The session is deleted on the server: a copy of its cookie signs nobody in from now on."""
    await end_session(request)
    return redirect(request, "/login")


@router.post("/account/sessions/end")
async def sign_out_everywhere(page: AnyUser) -> Response:
    """Every session of this user ends, in every browser and on every instance, this one included."""
    await sessions_of(page.request).end_sessions_of(page.user.id)
    await end_session(page.request)
    return redirect(page.request, "/login")


@router.get("/account/password")
async def password_form(page: AnyUser) -> Response:
    return page.render("password.html", errors={})


@router.post("/account/password")
async def change_password(
    page: AnyUser, current: Annotated[str, Form()], new: Annotated[str, Form()], repeat: Annotated[str, Form()]
) -> Response:
    try:
        if new != repeat:
            raise InvalidUser("repeat", PASSWORDS_DIFFER)
        # This session goes on; every other one of this user's ends.
        await users_of(page.request).change_password(page.user, current, new, keep_session=session_of(page.request).id)
    except InvalidUser as refused:
        return page.render("password.html", 422, errors={refused.field: page.gettext(str(refused))})
    flash(page.request, page.gettext("Your password is changed."))
    return page.redirect("/")


@router.get("/account")
async def preferences_form(page: AnyUser) -> Response:
    sessions = await sessions_of(page.request).count_of(page.user.id)
    zones = _zones(page.user.time_zone)
    return page.render("account.html", languages=LANGUAGES, time_zones=zones, errors={}, sessions=sessions)


@router.post("/account")
async def save_preferences(
    page: AnyUser, language: Annotated[str, Form()], time_zone: Annotated[str, Form()]
) -> Response:
    try:
        await users_of(page.request).set_preferences(page.user, language, time_zone)
    except InvalidUser as refused:
        errors = {refused.field: page.gettext(str(refused))}
        sessions = await sessions_of(page.request).count_of(page.user.id)
        zones = _zones(time_zone)
        return page.render("account.html", 422, languages=LANGUAGES, time_zones=zones, errors=errors, sessions=sessions)
    return page.redirect("/account")


def _zones(current: str) -> tuple[str, ...]:
    return COMMON_TIME_ZONES if current in COMMON_TIME_ZONES else (current, *COMMON_TIME_ZONES)


@router.post("/account/language")
async def switch_language(
    page: AnyUser, language: Annotated[str, Form()], back: Annotated[str, Form()] = "/"
) -> Response:
    try:
        await users_of(page.request).set_preferences(page.user, language, page.user.time_zone)
    except InvalidUser as refused:
        flash(page.request, page.gettext(str(refused)), "error")
    return page.redirect(_safe_next(back))
