"""What every page shares: the signed-in user from the session cookie, CSRF protection, the user's language and
time zone, the templates, flash messages and the banner of a service that does not answer."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from console.backends import BackendProblem, Backends, BackendUnavailable, PartnerApi
from console.domain import Role, User
from console.i18n import Formats, negotiate, translations
from console.services import Users
from console.settings import ConsoleSettings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


class Templates:
    """One Jinja environment per language, each with its gettext catalogue installed."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.environments = {language: environment(language) for language in languages}

    def render(self, language: str, name: str, context: dict[str, Any]) -> str:
        return self.environments[language].get_template(name).render(context)


def N_(message: str) -> str:
    """Marks a message for extraction where it is defined; it is translated where it is shown (`Page.gettext`)."""
    return message


# Field errors whose kind says it all, in words a form can show in either language (pydantic's and the services').
COMMON_FIELD_ERRORS = {
    "missing": N_("Required."),
    "string_too_short": N_("Required."),
    "string_too_long": N_("Too long."),
    "int_parsing": N_("Enter a whole number."),
    "greater_than_equal": N_("Too small."),
    "less_than_equal": N_("Too large."),
    "forbidden_character": N_("Contains a character that cannot be stored."),
}


# --- session and CSRF ------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use): every form carries it, htmx sends it as a header."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


class CsrfRefused(Exception):
    pass


async def csrf_protected(request: Request) -> None:
    """An app-wide dependency: a request that changes anything must carry the session's token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = str((await request.form()).get(CSRF_FIELD) or "")
    if not expected or not secrets.compare_digest(str(expected), sent):
        raise CsrfRefused()


def flash(request: Request, message: str, kind: str = "success") -> None:
    request.session.setdefault("flash", []).append({"message": message, "kind": kind})


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# --- the signed-in user ------------------------------------------------------------------------------------------


class SignInRequired(Exception):
    def __init__(self, *, must_change_password: bool = False) -> None:
        super().__init__()
        self.must_change_password = must_change_password


class NotAllowed(Exception):
    """The signed-in user's role may not see or do this."""


def settings_of(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


def users_of(request: Request) -> Users:
    users: Users = request.app.state.users
    return users


@dataclass
class Page:
    """A request of a signed-in user: what a route needs to call the backends and render."""

    request: Request
    user: User
    fmt: Formats

    @cached_property
    def api(self) -> PartnerApi:
        """The backends as this user's partner (one token for the whole request)."""
        if self.user.partner_id is None:
            raise NotAllowed()
        backends: Backends = self.request.app.state.backends
        return backends.as_partner(self.user.partner_id, self.user.backend_scopes)

    def gettext(self, message: str, /, **variables: Any) -> str:
        text = translations(self.fmt.language).ugettext(message)
        return text % variables if variables else text

    def field_errors(self, refused: BackendProblem) -> dict[str, str]:
        """A refusal's messages by field, in the user's language where the kind of error is a common one (the
        service's own words otherwise: they name the rule, e.g. which campaign or which code)."""
        errors: dict[str, str] = {}
        for error in refused.errors():
            known = COMMON_FIELD_ERRORS.get(str(error.get("type", "")))
            message = self.gettext(known) if known else str(error.get("message", ""))
            errors.setdefault(str(error.get("field", "")), message)
        return errors

    def render(
        self, template: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> HTMLResponse:
        return render(self.request, template, status_code, headers, user=self.user, fmt=self.fmt, **context)

    def redirect(self, url: str) -> Response:
        return redirect(self.request, url)


def redirect(request: Request, url: str) -> Response:
    """After a change: a full page load of `url` (htmx follows HX-Redirect; a plain form the 303)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    *,
    user: User | None = None,
    fmt: Formats | None = None,
    **context: Any,
) -> HTMLResponse:
    settings = settings_of(request)
    if fmt is None:
        language = negotiate(request.headers.get("accept-language"), settings.default_language)
        fmt = Formats(language, settings.default_time_zone)
    templates: Templates = request.app.state.templates
    html = templates.render(
        fmt.language,
        template,
        {
            "request": request,
            "user": user,
            "fmt": fmt,
            "csrf_token": csrf_token(request),
            "layout": "fragment.html" if is_htmx(request) and not context.get("full_page") else "layout.html",
            "flashes": request.session.pop("flash", []) if user else [],
            **context,
        },
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def start_session(request: Request, user: User) -> None:
    """Sign `user` in on this session, as of their credentials' current generation."""
    request.session["user"] = user.id
    request.session["generation"] = user.session_generation


async def signed_in(request: Request) -> Page:
    user_id = request.session.get("user")
    user = await users_of(request).get(int(user_id)) if user_id else None
    if user is None or request.session.get("generation", 0) != user.session_generation:
        # Gone, or the password was changed or reset since this session signed in: it ends here.
        request.session.pop("user", None)
        raise SignInRequired()
    if user.must_change_password and request.url.path != "/account/password":
        raise SignInRequired(must_change_password=True)
    page = request.state.page = Page(request, user, Formats(user.language, user.time_zone))
    return page


async def _page_of(request: Request) -> Page:
    """For an error answer: the page the route's dependency made (signed in already), else a fresh look-up."""
    page = getattr(request.state, "page", None)
    return page if isinstance(page, Page) else await signed_in(request)


def role_page(allowed: Callable[[User], bool]) -> Callable[..., Any]:
    async def dependency(page: Annotated[Page, Depends(signed_in)]) -> Page:
        if not allowed(page.user):
            raise NotAllowed()
        return page

    return dependency


AnyUser = Annotated[Page, Depends(signed_in)]
"""Any signed-in user (their account pages)."""
PartnerUser = Annotated[Page, Depends(role_page(lambda u: u.role in (Role.MARKETER, Role.VIEWER)))]
"""A partner's user, marketer or viewer: the partner pages, read."""
Marketer = Annotated[Page, Depends(role_page(lambda u: u.role is Role.MARKETER))]
"""A partner's marketer: the partner pages, read and change."""
Operator = Annotated[Page, Depends(role_page(lambda u: u.role is Role.OPS))]
"""One of the platform's operators: the ops pages only."""


# --- answers to what went wrong ----------------------------------------------------------------------------------


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    if exc.must_change_password:
        return redirect(request, "/account/password")
    next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, f"/login?next={quote(next_url)}")


async def _csrf_refused(request: Request, _: Exception) -> Response:
    return render(request, "error.html", 403, reason="csrf")


async def _not_allowed(request: Request, _: Exception) -> Response:
    page = await _page_of(request)
    return page.render("error.html", 403, reason="forbidden")


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendUnavailable)
    page = await _page_of(request)
    if is_htmx(request):  # the banner replaces the page's banner slot; the page stays as it is
        headers = {"HX-Retarget": "#banner", "HX-Reswap": "innerHTML"}
        return page.render("banner.html", 200, headers, service=exc.service)
    return page.render("unavailable.html", 503, service=exc.service)


async def _refused(request: Request, exc: Exception) -> Response:
    """A refusal no page expected (e.g. a URL naming an order that does not exist): the service's words."""
    assert isinstance(exc, BackendProblem)
    page = await _page_of(request)
    return page.render("error.html", exc.status, reason="refused", detail=exc.detail, status=exc.status)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback; the user sees a page that says so, never a stack trace."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return render(request, "error.html", 500, reason="bug")


def install_page_handlers(app: Any) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(BackendProblem, _refused)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(NotAllowed, _not_allowed)
    app.add_exception_handler(BackendUnavailable, _unavailable)
