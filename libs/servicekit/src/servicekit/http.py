"""The HTTP plumbing every service's FastAPI app shares: limits, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.text import text_problem, unstorable_json
from servicekit.errors import PreconditionFailed, PreconditionRequired, ProblemResponse, problem_response

ReadinessCheck = Callable[[], Awaitable[bool]]


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


VersionedT = TypeVar("VersionedT", bound=Versioned)


def with_etag(response: Response, resource: VersionedT) -> VersionedT:
    """Answer with the resource's version as its (strong) ETag; clients send it back in If-Match."""
    response.headers["ETag"] = f'"{resource.version}"'
    return resource


def version_from_if_match(if_match: str | None, *, required: bool, what: str = "the resource") -> int | None:
    """The version an If-Match names: 428 when required and missing, 412 when it is no ETag of ours."""
    if if_match is None:
        if required:
            raise PreconditionRequired(f"send If-Match with {what}'s ETag")
        return None
    try:
        return int(if_match.removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise PreconditionFailed(f"If-Match {if_match!r} is no ETag of ours") from exc


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNSTORABLE = "forbidden_character"


async def refuse_unstorable_text(request: Request) -> None:
    """An app-wide dependency: NUL characters and unpaired surrogates anywhere in the request (path, query, header,
    JSON body) are a 422 naming the field, never a 500 from the database (see `contracts.text`)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for location, items in (
        ("path", request.path_params.items()),
        ("query", request.query_params.multi_items()),
        ("header", request.headers.items()),
    ):
        for name, value in items:
            if problem := text_problem(str(name)) or text_problem(str(value)):
                found.append(((location, name), problem))
    if request.method in BODY_METHODS:
        found += [(("body", *path), problem) for path, problem in unstorable_json(await request.body())]
    if found:
        raise RequestValidationError([{"loc": loc, "msg": msg, "type": UNSTORABLE} for loc, msg in found])


class BodyLimits:
    """Pure ASGI middleware: 413 above the size limit, 415 for a body that is not JSON.

    Checked before FastAPI parses anything, so an oversized body is never read into memory whole.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = int(headers.get("content-length") or 0)
        if length > self.max_body_bytes:
            await self._reject(scope, receive, send, 413, f"body exceeds {self.max_body_bytes} bytes")
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = length > 0 or "transfer-encoding" in headers
        if has_body and not (content_type == "application/json" or content_type.endswith("+json")):
            await self._reject(scope, receive, send, 415, "send the body as application/json")
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLarge
            return message

        return wrapped

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, code: int, detail: str) -> None:
        await problem_response(code, detail)(scope, receive, send)


class BodyTooLarge(Exception):
    """A chunked body grew past the limit after the headers were accepted."""


async def _body_too_large(_: Request, __: Exception) -> ProblemResponse:
    return problem_response(413, "body too large")


def install_plumbing(app: FastAPI, *, max_body_bytes: int, checks: Mapping[str, ReadinessCheck]) -> None:
    """Add body limits, /healthz, /readyz (each named check must pass) and /metrics to an app."""
    app.add_middleware(BodyLimits, max_body_bytes=max_body_bytes)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    install_probes(app, checks)


def install_probes(app: FastAPI, checks: Mapping[str, ReadinessCheck]) -> None:
    """/healthz, /readyz (each named check must pass) and /metrics."""

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database and broker reachable")
    async def readyz() -> JSONResponse:
        results = {name: await check() for name, check in checks.items()}
        ready = all(results.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": results}
        return JSONResponse(body, status_code=200 if ready else 503)

    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app).expose(
        app, include_in_schema=False
    )
