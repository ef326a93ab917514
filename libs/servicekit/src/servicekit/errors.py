"""The one HTTP error model of every service: RFC 9457 problem details (`application/problem+json`).

Every 4xx and 5xx answer has the shape of `Problem`::

    {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no order 'o-1'", "code": "not_found"}

`code` is stable and machine-readable (clients branch on it, never on `detail`); validation failures add
`errors`, one `FieldError` per refused field; an error may add extension members (the registry's 409
`status_in_use` names the blocking `campaigns`).

Services raise the exceptions of servicekit.problems, re-exported here (`NotFound`, `Conflict`,
`PreconditionFailed`, ...), from their use cases or routes; `install_error_handlers` (called by
`servicekit.app.create_service_app`) turns them, FastAPI's `HTTPException` and `RequestValidationError`, and any
unexpected exception into problem responses, and `document_errors` makes the OpenAPI document say so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from servicekit.problems import (
    MAX_FIELD_ERRORS,
    MAX_JSON_DEPTH,
    PROBLEM_MEDIA_TYPE,
    Conflict,
    FieldError,
    Forbidden,
    InvalidRequest,
    Location,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    Problem,
    ProblemError,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    _summary,
    code_of,
    field_errors,
    printable,
    problem_body,
)

__all__ = [
    "MAX_FIELD_ERRORS",
    "MAX_JSON_DEPTH",
    "PROBLEM_MEDIA_TYPE",
    "Conflict",
    "FieldError",
    "Forbidden",
    "InvalidRequest",
    "Location",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "Problem",
    "ProblemError",
    "ProblemResponse",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "allowed_methods",
    "code_of",
    "document_errors",
    "field_errors",
    "install_error_handlers",
    "printable",
    "problem",
    "problem_body",
    "problem_response",
    "problems",
]

log = logging.getLogger(__name__)


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        # A refused request's own text may hold what UTF-8 cannot encode (a lone surrogate in a JSON key it names):
        # written as a JSON escape, so describing the refusal never fails with a 500.
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    return ProblemResponse(
        problem_body(status, detail, code=code, errors=errors, **extensions), status_code=status, headers=headers
    )


async def _problem(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.detail, code=exc.code, errors=exc.errors, headers=exc.headers, **exc.extensions
    )


async def _validation(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return problem_response(422, _summary(errors), code="validation_failed", errors=errors)


async def _http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(exc.status_code, detail, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. The router's 405 names the methods of the first route
    whose path matched, while FastAPI declares one route per method (GET, POST and PUT of one path are three)."""
    # Routing state of the refused match (FastAPI keeps some under "fastapi") must not steer the trial matches.
    base = {k: v for k, v in request.scope.items() if k not in ("fastapi", "route", "endpoint", "path_params")}
    return [
        method
        for method in METHODS
        if any(route.matches({**base, "method": method})[0] is Match.FULL for route in request.app.router.routes)
    ]


async def _unique_violation(_: Request, exc: Exception) -> ProblemResponse:
    # Two requests raced for one unique key (a code, an initial slot, a name); the loser may read and retry.
    return problem_response(409, "a concurrent change came first; read and retry", code="concurrent_change")


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    # Logged in full here; the client learns only that it failed (no internals, no stack trace).
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "the server failed to answer this request; it has been logged", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Every error of `app` answers with a problem (see the module docstring)."""
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(asyncpg.UniqueViolationError, _unique_violation)
    app.add_exception_handler(Exception, _unexpected)


# --- OpenAPI --------------------------------------------------------------------------------------

_DESCRIPTIONS = {
    400: f"`json_too_deep`: the JSON body nests deeper than {MAX_JSON_DEPTH} levels; `bad_request`: the body "
    "could not be parsed otherwise (a number of more than 4,300 digits)",
    401: "Missing or invalid credentials",
    403: "The token lacks the scope this operation needs",
    404: "No such resource (or it belongs to another partner)",
    409: "Conflicts with the current state",
    412: "`version_mismatch`: If-Match names another version than the current one",
    413: "`payload_too_large`: the body exceeds the size limit (declared, or counted while a chunked body arrives)",
    415: "`unsupported_media_type`: the body is not JSON; `not_utf8`: it is not in UTF-8 (RFC 8259)",
    422: f"`validation_failed`: the request does not validate; `errors` names the fields (the first "
    f"{MAX_FIELD_ERRORS}; `error_count` says how many when there were more)",
    428: "If-Match is required",
    500: "Unexpected server error",
}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response object: `status` answered with a `Problem`."""
    return {
        "description": description or _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
    }


def problems(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: ``problems(404, 412, s428="send If-Match")`` (descriptions keyed ``s<status>``)."""
    return {status: problem(status, descriptions.get(f"s{status}")) for status in statuses}


def document_errors(app: FastAPI, amend: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Make the OpenAPI document true for the errors every route shares, where they arise in servicekit
    (`amend`, if given, changes the document once more: e.g. the deployment's token URL):

    * 422 (`Problem` with `errors`) wherever a route has parameters or a body (replacing FastAPI's
      HTTPValidationError, which this app never sends),
    * 401 and 403 on routes that need a token, 400, 413 and 415 on every POST, PUT and PATCH (the body rules
      hold for whatever body they send), 500 everywhere.

    Route-specific errors (404, 409, 412, 428, domain 422s) are declared on the route with `problems(...)`.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
        )
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                _add_shared_errors(method, operation)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        definitions = Problem.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        components.update(definitions.pop("$defs", {}))
        components["Problem"] = definitions
        if amend is not None:
            amend(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_shared_errors(method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # The body rules (servicekit.http.BodyLimits and the NUL check) hold for any body a POST, PUT or PATCH sends,
    # even to a route that reads none.
    takes_body = method.upper() in ("POST", "PUT", "PATCH")
    shared: list[int] = []
    if operation.get("security"):
        shared += [401, 403]
    if operation.get("parameters") or takes_body:
        shared.append(422)
    if takes_body:
        shared += [400, 413, 415]
    shared.append(500)
    for status in shared:
        existing = responses.get(str(status))
        if existing is None or "HTTPValidationError" in str(existing):
            responses[str(status)] = problem(status)
