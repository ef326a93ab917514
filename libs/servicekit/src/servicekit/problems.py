"""The problems services refuse requests with, as plain types (pydantic, no web framework): RFC 9457 problem
details' shape (`Problem`, `FieldError`) and the exceptions use cases raise (`NotFound`, `Conflict`, ...).

servicekit.errors turns them into HTTP answers and re-exports them; a module with no HTTP in it (a domain, and the
campaigns backtest's worker processes, which import the domain and start faster without FastAPI) imports them here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

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
