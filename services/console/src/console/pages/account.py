"""Signing in and out, the one-time password's replacement, and the user's language and time zone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from console.domain import LANGUAGES, InvalidUser, Role
from console.web import AnyUser, csrf_token, flash, redirect, render, start_session, users_of

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
    csrf_token(request)
    return render(request, "login.html", next=_safe_next(next), full_page=True)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    user = await users_of(request).authenticate(email, password)
    if user is None:
        return render(request, "login.html", 401, next=_safe_next(next), email=email, failed=True, full_page=True)
    request.session.clear()  # a new session at sign-in: nothing from before it carries over (session fixation)
    start_session(request, user)
    csrf_token(request)
    if user.must_change_password:
        return redirect(request, "/account/password")
    return redirect(request, _safe_next(next))


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.session.clear()
    return redirect(request, "/login")


@router.get("/account/password")
async def password_form(page: AnyUser) -> Response:
    return page.render("password.html", errors={})


@router.post("/account/password")
async def change_password(
    page: AnyUser, current: Annotated[str, Form()], new: Annotated[str, Form()], repeat: Annotated[str, Form()]
) -> Response:
    try:
        if new != repeat:
            raise InvalidUser("repeat", "the two new passwords differ")
        changed = await users_of(page.request).change_password(page.user, current, new)
    except InvalidUser as refused:
        return page.render("password.html", 422, errors={refused.field: page.gettext(str(refused))})
    start_session(page.request, changed)  # this session goes on; every other one of this user's has ended
    flash(page.request, page.gettext("Your password is changed."))
    return page.redirect("/")


@router.get("/account")
async def preferences_form(page: AnyUser) -> Response:
    return page.render("account.html", languages=LANGUAGES, time_zones=_zones(page.user.time_zone), errors={})


@router.post("/account")
async def save_preferences(
    page: AnyUser, language: Annotated[str, Form()], time_zone: Annotated[str, Form()]
) -> Response:
    try:
        await users_of(page.request).set_preferences(page.user, language, time_zone)
    except InvalidUser as refused:
        errors = {refused.field: page.gettext(str(refused))}
        return page.render("account.html", 422, languages=LANGUAGES, time_zones=_zones(time_zone), errors=errors)
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
