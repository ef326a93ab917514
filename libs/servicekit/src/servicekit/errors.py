"""The one HTTP error model of every service: RFC 9457 problem details (`application/problem+json`).

Every 4xx and 5xx answer has the shape of `Problem`::

    {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no order 'o-1'", "code": "not_found"}

`code` is stable and machine-readable (clients branch on it, never on `detail`); validation failures add
`errors`, one `FieldError` per refused field; an error may add extension members (the registry's 409
`status_in_use` names the blocking `campaigns`).

Services raise the exceptions defined here (`NotFound`, `Conflict`, `PreconditionFailed`, ...) from their use
cases or routes; `install_error_handlers` (called by `servicekit.app.create_service_app`) turns them, FastAPI's
`HTTPException` and `RequestValidationError`, and any unexpected exception into problem responses, and
`document_errors` makes the OpenAPI document say so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# A problem lists at most this many field errors (and then says how many there were): a body of 10,000 wrong items
# earns a small answer, not a megabyte of errors.
MAX_FIELD_ERRORS = 50
# A JSON body may nest this deep (the schemas need under ten levels): deeper, servicekit.http refuses it before the
# parser, which would otherwise hit Python's recursion limit at about 990 levels.
MAX_JSON_DEPTH = 64

Location = Literal["body", "query", "path", "header", "cookie"]


class FieldError(BaseModel):
    """One refused field of a request."""

    model_config = ConfigDict(extra="allow")  # e.g. `line` of a template problem

    location: Location = Field(description="Where the field is: body, query, path, header or cookie")
    field: str = Field(description="Dotted path of the field inside its location ('' for the whole body)")
    message: str = Field(description="What is wrong, for humans")
    type: str = Field(description="Machine-readable kind of error, e.g. missing, string_too_long, rule_violation")


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details); extension members may follow the standard ones."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(default="about:blank", description="A URI naming the problem type; about:blank here")
    title: str = Field(description="The HTTP status phrase, e.g. Not Found")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong in this occurrence, for humans")
    code: str = Field(description="Stable machine-readable error code, e.g. not_found, validation_failed")
    errors: list[FieldError] | None = Field(
        default=None, description=f"The refused fields (validation errors): the first {MAX_FIELD_ERRORS} at most"
    )
    error_count: int | None = Field(
        default=None, description=f"How many fields were refused, when there were more than {MAX_FIELD_ERRORS}"
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        # A refused request's own text may hold what UTF-8 cannot encode (a lone surrogate in a JSON key it names):
        # written as a JSON escape, so describing the refusal never fails with a 500.
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


# The code of an HTTPException (FastAPI's own, or a library's) by its status.
_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "version_mismatch",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    428: "precondition_required",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def code_of(status: int) -> str:
    return _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_"))


def problem_body(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Sequence[FieldError] = (),
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code or code_of(status),
    }
    if errors:
        body["errors"] = [e.model_dump(mode="json") for e in errors[:MAX_FIELD_ERRORS]]
        if len(errors) > MAX_FIELD_ERRORS:
            body["error_count"] = len(errors)
    body.update(extensions)
    return body


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


# --- the exceptions services raise ----------------------------------------------------------------


class ProblemError(Exception):
    """An error that answers with a problem; subclasses fix the status and the default code."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.errors = tuple(errors)
        self.headers = dict(headers or {})
        self.extensions = extensions

    def response(self) -> ProblemResponse:
        return problem_response(
            self.status, self.detail, code=self.code, errors=self.errors, headers=self.headers, **self.extensions
        )


class Unauthorized(ProblemError):
    status = 401
    default_code = "unauthorized"

    def __init__(self, detail: str, *, code: str | None = None, challenge: str = "Bearer") -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": challenge})


class Forbidden(ProblemError):
    status = 403
    default_code = "forbidden"


class NotFound(ProblemError):
    status = 404
    default_code = "not_found"


class Conflict(ProblemError):
    status = 409
    default_code = "conflict"


class PreconditionFailed(ProblemError):
    """412: If-Match names no version the resource is at."""

    status = 412
    default_code = "version_mismatch"


class PayloadTooLarge(ProblemError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ProblemError):
    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(ProblemError):
    """422: the request is well-formed but refused (a rule, a malformed cursor, an unknown code...)."""

    status = 422
    default_code = "unprocessable"


class InvalidRequest(Unprocessable):
    """422 naming the refused fields, like a failed schema validation."""

    default_code = "validation_failed"

    def __init__(self, errors: Sequence[FieldError], *, detail: str | None = None, code: str | None = None) -> None:
        super().__init__(detail or _summary(errors), code=code, errors=errors)


class PreconditionRequired(ProblemError):
    status = 428
    default_code = "precondition_required"


class TooManyRequests(ProblemError):
    """429: a limit of the caller's is used up; `Retry-After` says for how long (RFC 9110 section 10.2.3)."""

    status = 429
    default_code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after_s: int, code: str | None = None, **extensions: Any) -> None:
        super().__init__(
            detail, code=code, headers={"Retry-After": str(retry_after_s)}, retry_after_s=retry_after_s, **extensions
        )


def _summary(errors: Sequence[FieldError]) -> str:
    if len(errors) == 1:
        (error,) = errors
        where = f"{error.location} {error.field}".strip() if error.field else error.location
        return f"{where}: {error.message}"
    shown = f" (the first {MAX_FIELD_ERRORS})" if len(errors) > MAX_FIELD_ERRORS else ""
    return f"the request has {len(errors)} invalid fields; see errors{shown}"


# --- handlers -------------------------------------------------------------------------------------


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """pydantic/FastAPI validation errors (`loc`, `msg`, `type`) as `FieldError`s."""
    result = []
    for error in errors:
        loc = [printable(str(part)) for part in error.get("loc", ())]
        location = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        rest = loc[1:] if loc and loc[0] == location else loc
        result.append(
            FieldError(location=location, field=".".join(rest), message=str(error.get("msg", "")), type=error["type"])
        )
    return result


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode (a lone surrogate) written as its escape, e.g. the key of a refused
    field: `\\ud800`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def _problem(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return exc.response()


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
