"""The HTTP plumbing every service's FastAPI app shares: limits, health, readiness and metrics."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.text import text_problem, unstorable_json
from servicekit.errors import (
    MAX_JSON_DEPTH,
    PreconditionFailed,
    PreconditionRequired,
    printable,
    problem_response,
)

ReadinessCheck = Callable[[], Awaitable[bool]]


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


VersionedT = TypeVar("VersionedT", bound=Versioned)


def with_etag(response: Response, resource: VersionedT) -> VersionedT:
    """Answer with the resource's version as its (strong) ETag; clients send it back in If-Match."""
    response.headers["ETag"] = f'"{resource.version}"'
    return resource


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(math.ceil((when - now).total_seconds())))


def version_from_if_match(if_match: str | None, *, required: bool, what: str = "the resource") -> int | None:
    """The version an If-Match names, None when there is none to check: absent (428 when required) or `*`, which
    matches whatever version is current (RFC 9110, 13.1.1). Anything else that is no ETag of ours is a 412
    `version_mismatch`: it names no version the resource can be at."""
    if if_match is None:
        if required:
            raise PreconditionRequired(f"send If-Match with {what}'s ETag")
        return None
    if if_match.strip() == "*":
        return None
    try:
        return int(if_match.removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise PreconditionFailed(f"If-Match {printable(if_match)!r} is no ETag of ours") from exc


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNSTORABLE = "forbidden_character"


NOT_UTF8 = "is not UTF-8 once percent-decoded"


async def refuse_unstorable_text(request: Request) -> None:
    """An app-wide dependency: NUL characters and unpaired surrogates anywhere in the request (path, query, header,
    JSON body) are a 422 naming the field, never a 500 from the database (see `contracts.text`); so are percent
    escapes of the path or the query that are not UTF-8 (`%ED%A0%80`), which Starlette would otherwise decode to
    U+FFFD replacement characters: `PUT /v1/orders/%ED%A0%80` created an order named "\ufffd\ufffd\ufffd"."""
    found: list[tuple[tuple[str | int, ...], str]] = list(_not_utf8(request))
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


def _not_utf8(request: Request) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """The path parameters and query parameters whose percent escapes are not UTF-8, by name."""
    raw_path = request.scope.get("raw_path") or b""
    if not _is_utf8(unquote_to_bytes(raw_path.split(b"?")[0])):
        # Starlette decoded the bad bytes to U+FFFD: the parameters holding one are the culprits.
        culprits = [name for name, value in request.path_params.items() if "\ufffd" in str(value)]
        yield from ((("path", name), NOT_UTF8) for name in culprits or [""])
    for pair in request.scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.replace(b"+", b" ").partition(b"=")
        if not (_is_utf8(unquote_to_bytes(name)) and _is_utf8(unquote_to_bytes(value))):
            yield ("query", unquote_to_bytes(name).decode("utf-8", "replace")), NOT_UTF8


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class BodyLimits:
    """Pure ASGI middleware: the rules of every request body, checked before FastAPI parses anything.

    * 413 `payload_too_large` above the size limit: the declared length, or the bytes counted as a chunked body
      arrives (never read into memory whole);
    * 415 `unsupported_media_type` for a body that is not JSON, and `not_utf8` for JSON that is not in UTF-8, the
      only encoding RFC 8259 allows: a UTF-16 or UTF-32 body (which Python's parser would have decoded) or bytes
      that are no UTF-8 at all. One rule for every route, so no check further in ever sees text it was not written
      for (the NUL check looks for the UTF-8 bytes of `\\u0000`);
    * 400 `json_too_deep` for JSON nested deeper than `MAX_JSON_DEPTH`.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length") or "0"
        if not declared.isdigit():
            await self._reject(scope, receive, send, 400, f"Content-Length {declared!r} is no length", "bad_request")
            return
        if int(declared) > self.max_body_bytes:
            await self._reject(scope, receive, send, 413, f"body exceeds {self.max_body_bytes} bytes")
            return
        media_type, *parameters = headers.get("content-type", "").lower().split(";")
        media_type = media_type.strip()
        if not (int(declared) > 0 or "transfer-encoding" in headers):
            await self.app(scope, receive, send)
            return
        if not (media_type == "application/json" or media_type.endswith("+json")):
            await self._reject(scope, receive, send, 415, "send the body as application/json")
            return
        if not all(_utf8_or_other(parameter) for parameter in parameters):
            await self._reject(scope, receive, send, 415, "send the JSON body in UTF-8 (RFC 8259)", "not_utf8")
            return
        body = await self._read(receive)
        if body is None:
            await self._reject(scope, receive, send, 413, f"body exceeds {self.max_body_bytes} bytes")
        elif b"\x00" in body or not _is_utf8(body):  # no JSON text in UTF-8 holds a NUL byte; UTF-16 and -32 do
            await self._reject(scope, receive, send, 415, "send the JSON body in UTF-8 (RFC 8259)", "not_utf8")
        elif nests_deeper_than(body, MAX_JSON_DEPTH):
            detail = f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            await self._reject(scope, receive, send, 400, detail, "json_too_deep")
        else:
            await self.app(scope, replaying(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it grows past the limit (a chunked body has no declared length)."""
        chunks, received = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _reject(
        scope: Scope, receive: Receive, send: Send, status: int, detail: str, code: str | None = None
    ) -> None:
        await problem_response(status, detail, code=code)(scope, receive, send)


def _utf8_or_other(parameter: str) -> bool:
    """A media type parameter that is no charset, or says UTF-8."""
    name, _, value = parameter.partition("=")
    return name.strip() != "charset" or value.strip().strip('"') in ("utf-8", "utf8")


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind: the body read already, then whatever comes next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest deeper than `limit` (brackets inside strings do not
    count). Cheap for an ordinary body: it cannot nest deeper than it has opening brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _JSON_STRING.sub(b"", body).translate(None, _NOT_A_BRACKET):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def install_plumbing(app: FastAPI, *, max_body_bytes: int, checks: Mapping[str, ReadinessCheck]) -> None:
    """Add body limits, /healthz, /readyz (each named check must pass) and /metrics to an app."""
    app.add_middleware(BodyLimits, max_body_bytes=max_body_bytes)
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


def register_id_in_path(name: str, reserved: tuple[str, ...]) -> None:
    """A path parameter type `{param:name}`: any segment but the collection's own words, so that `/v1/messages/test`
    or `/v1/campaigns/preview` reaches its route (or a 405 naming its methods) whatever the method, instead of being
    taken for the resource with that id (ids are uuids: none is one of these words)."""
    words = "|".join(re.escape(word) for word in reserved)

    class ReservedWordsConvertor(StringConvertor):
        regex = rf"(?!(?:{words})(?:/|$))[^/]+"

    register_url_convertor(name, ReservedWordsConvertor())
