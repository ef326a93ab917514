"""What every page shares: the server-side session and the signed-in user, CSRF protection, the security headers,
the user's language and time zone, the templates, flash messages and the banner of a service that does not answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import explain
from console.backends import BackendProblem, Backends, BackendUnavailable, InputTooLong, PartnerApi
from console.domain import N_ as N_  # the pages' marker too
from console.domain import Role, User
from console.i18n import Formats, negotiate, translations
from console.services import Sessions, Users
from console.settings import ConsoleSettings
from contracts.text import text_problem

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
    words = gettext_of(language)
    env.globals["reason_words"] = lambda code: explain.reason(words, str(code))
    env.globals["template_words"] = lambda message, line=None: explain.template_problem(words, str(message), line)
    return env


def gettext_of(language: str) -> Callable[..., str]:
    """gettext in `language`, with %-style variables."""
    catalogue = translations(language)

    def gettext(message: str, /, **variables: Any) -> str:
        text = catalogue.ugettext(message)
        return text % variables if variables else text

    return gettext


class Templates:
    """One Jinja environment per language, each with its gettext catalogue installed."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.environments = {language: environment(language) for language in languages}

    def render(self, language: str, name: str, context: dict[str, Any]) -> str:
        return self.environments[language].get_template(name).render(context)


# Field errors whose kind says it all, in words a form can show in either language (pydantic's and the services').
COMMON_FIELD_ERRORS = {
    "missing": N_("Required."),
    "string_too_short": N_("Required."),
    "string_too_long": N_("Too long."),
    "int_parsing": N_("Enter a whole number."),
    "greater_than_equal": N_("Too small."),
    "less_than_equal": N_("Too large."),
    "forbidden_character": N_("Contains a character that cannot be stored."),
    "decimal_parsing": N_("Enter an amount, such as 1990.00."),
    "time_parsing": N_("Enter a time, such as 09:00."),
}
# Field errors whose words depend on the field (the last part of the field's name, and the error's kind).
FIELD_ERRORS = {
    ("sender", "string_pattern_mismatch"): N_(
        "Up to 15 Latin letters, digits, spaces and . _ + -, exactly as your SMS provider registered the name."
    ),
    ("currency", "string_pattern_mismatch"): N_("Three capital letters, such as RUB."),
    ("phone", "string_pattern_mismatch"): N_("Enter the number with its country code, such as +79161234567."),
}


# --- security headers ---------------------------------------------------------------------------------------------

# No script but the console's own files (htmx and console.js: no inline script, no event handler attribute, no
# eval), no style but its own files (htmx's indicator style is in console.css: `includeIndicatorStyles` is off),
# Pico's icons as data: images, forms that post only here, and no page of the console inside another site's frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response of the app (the unexpected-error page adds them itself: it is sent
    from outside every middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, with_headers)


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    missing = {name: value for name, value in SECURITY_HEADERS.items() if name.encode() not in present}
    return headers + [(name.encode(), value.encode()) for name, value in missing.items()]


# --- sessions ----------------------------------------------------------------------------------------------------

SESSION_COOKIE = "console_session"
_SESSION_STATE = "console.session"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
# Paths that never need a session: no database round trip for a stylesheet or a probe.
_SESSIONLESS = ("/static/", "/healthz", "/readyz", "/metrics")


@dataclass
class SessionState:
    """This request's session: its id (the cookie), the user signed in on it (None: not signed in) and its data
    (`request.session`: flash messages and the like, kept in the database while signed in)."""

    id: str
    user: User | None = None
    data: dict[str, Any] = field(default_factory=dict)
    stored: str = "{}"  # the data as loaded, to write it back only when a page changed it
    cookie: str | None = None  # a Set-Cookie value the answer must carry

    def changed(self) -> bool:
        return json.dumps(self.data, sort_keys=True) != self.stored


def _new_session_id() -> str:
    return secrets.token_urlsafe(32)


class ServerSessions:
    """Gives every page request its session from the console's database. The cookie holds a random id only; the
    session, if one is signed in under it, is a row of `console_sessions` (by the id's hash), so signing out or
    ending a user's sessions takes effect at once on every instance. A visitor who is not signed in gets an id
    too, never stored: it keys the sign-in form's CSRF token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_SESSIONLESS):
            await self.app(scope, receive, send)
            return
        sessions: Sessions = scope["app"].state.sessions
        settings: ConsoleSettings = scope["app"].state.settings
        state = scope[_SESSION_STATE] = await _resume(sessions, Request(scope).cookies.get(SESSION_COOKIE, ""))
        secure = scope.get("scheme") == "https" or settings.session_cookie_secure

        async def with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                if state.user is not None and state.changed():
                    await sessions.save(state.id, state.data)
                if state.cookie is not None:
                    cookie = state.cookie + ("; Secure" if secure else "")
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]
            await send(message)

        scope["session"] = state.data  # `request.session`
        await self.app(scope, receive, with_session)


async def _resume(sessions: Sessions, cookie: str) -> SessionState:
    if not _SESSION_ID.fullmatch(cookie):
        state = SessionState(_new_session_id())
        state.cookie = _cookie(state.id, max_age=None)
        return state
    resumed = await sessions.resume(cookie)
    if resumed is None:  # signed out, ended or expired, or never signed in: a visitor
        return SessionState(cookie)
    return SessionState(cookie, resumed.user, resumed.data, json.dumps(resumed.data, sort_keys=True))


def _cookie(value: str, max_age: int | None) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[SESSION_COOKIE] = value
    morsel = cookie[SESSION_COOKIE]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "lax"
    if max_age is not None:
        morsel["max-age"] = max_age
    return morsel.OutputString()


def session_of(request: Request) -> SessionState:
    state: SessionState = request.scope[_SESSION_STATE]
    return state


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def start_session(request: Request, user: User) -> None:
    """Sign `user` in: a new session under a new id (nothing from before carries over: no session fixation)."""
    state = session_of(request)
    address = request.client.host if request.client else ""
    state.id = await sessions_of(request).open(user, address, request.headers.get("user-agent", ""))
    state.user, state.data, state.stored = user, {}, "{}"
    request.scope["session"] = state.data
    state.cookie = _cookie(state.id, max_age=settings_of(request).session_max_age_s)


async def end_session(request: Request) -> None:
    """Sign out: the session is deleted (a copy of the cookie signs nobody in any more) and the browser gets a new
    visitor's id."""
    state = session_of(request)
    await sessions_of(request).end(state.id)
    state.id, state.user, state.data = _new_session_id(), None, {}
    request.scope["session"] = state.data
    state.cookie = _cookie(state.id, max_age=None)


# --- CSRF --------------------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token: every form carries it, htmx sends it as a header. It is an HMAC of the session's
    id, so it needs no storage and changes with the session (at sign-in and sign-out)."""
    state = request.scope.get(_SESSION_STATE)
    if not isinstance(state, SessionState):
        return ""  # a page answered before the session was read (the database is away): it posts nothing
    secret = settings_of(request).session_secret.encode()
    return hmac.new(secret, f"csrf:{state.id}".encode(), hashlib.sha256).hexdigest()


class CsrfRefused(Exception):
    pass


async def csrf_protected(request: Request) -> None:
    """An app-wide dependency: a request that changes anything must carry the session's token."""
    if request.method in SAFE_METHODS or _SESSION_STATE not in request.scope:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = str((await request.form()).get(CSRF_FIELD) or "")
    if not hmac.compare_digest(csrf_token(request).encode(), sent.encode("utf-8", "replace")):
        raise CsrfRefused()


class NotFound(Exception):
    """No such page: a URL naming something that cannot exist (a NUL in an order id...)."""


async def storable_path(request: Request) -> None:
    """An app-wide dependency: a path naming an order, a status, a campaign or a message with a character no
    service can store (a NUL, a lone surrogate) names nothing: 404, before any backend is asked."""
    if any(text_problem(str(value)) for value in request.path_params.values()):
        raise NotFound()


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
        return backends.as_partner(self.user.partner_id, self.user.backend_scopes, self.user.email)

    def gettext(self, message: str, /, **variables: Any) -> str:
        return gettext_of(self.fmt.language)(message, **variables)

    def field_errors(self, refused: BackendProblem) -> dict[str, str]:
        """A refusal's messages by field, in the user's language where the kind of error is a common one (the
        service's own words otherwise: they name the rule, e.g. which campaign or which code)."""
        errors: dict[str, str] = {}
        for error in refused.errors():
            kind, name = str(error.get("type", "")), str(error.get("field", ""))
            known = FIELD_ERRORS.get((name.rsplit(".", 1)[-1], kind)) or COMMON_FIELD_ERRORS.get(kind)
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
    url = quote(url, safe=":/%#?=@[]!$&'()*+,;")  # as RedirectResponse does: an order id may hold any character
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


async def signed_in(request: Request) -> Page:
    user = session_of(request).user
    if user is None:
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
PartnerUser = Annotated[Page, Depends(role_page(lambda u: u.role in (Role.ADMIN, Role.MARKETER, Role.VIEWER)))]
"""A partner's user, admin, marketer or viewer: the partner pages, read."""
Marketer = Annotated[Page, Depends(role_page(lambda u: u.can_write))]
"""A partner's marketer (or admin: everything a marketer does): the partner pages, read and change."""
Admin = Annotated[Page, Depends(role_page(lambda u: u.is_admin))]
"""A partner's admin: the partner's users and API clients too."""
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


async def _invalid(request: Request, exc: Exception) -> Response:
    """A value of a URL or a form the route cannot take at all (a word for a number...): the fields, named."""
    assert isinstance(exc, RequestValidationError)
    fields = ", ".join(sorted({str(error["loc"][-1]) for error in exc.errors() if error.get("loc")}))
    return _error_page(request, 422, reason="invalid", fields=fields)


async def _too_long(request: Request, _: Exception) -> Response:
    return _error_page(request, 422, reason="too_long")


async def _not_found(request: Request, _: Exception) -> Response:
    return _error_page(request, 404, reason="refused", status=404, detail="")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a URL no page answers, a method no route takes): the console's error page, not
    Starlette's JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return _error_page(request, 404, reason="refused", status=404, detail="")
    return _error_page(request, exc.status_code, reason="refused", status=exc.status_code, detail="")


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback; the user sees a page that says so, never a stack trace."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    page = _error_page(request, 500, reason="bug")
    page.headers.update(SECURITY_HEADERS)  # sent from outside the middleware that adds them to every other answer
    return page


def _error_page(request: Request, status_code: int, **context: Any) -> HTMLResponse:
    """The error page, in the signed-in user's language when there is one (no look-up that could fail again)."""
    state = request.scope.get(_SESSION_STATE)
    user = state.user if isinstance(state, SessionState) else None
    fmt = Formats(user.language, user.time_zone) if user else None
    return render(request, "error.html", status_code, user=user, fmt=fmt, **context)


def install_page_handlers(app: Any) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(BackendProblem, _refused)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(NotAllowed, _not_allowed)
    app.add_exception_handler(BackendUnavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InputTooLong, _too_long)
