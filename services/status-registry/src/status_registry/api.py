"""HTTP API of the registry: CRUD of a partner's statuses, scoped by the caller's token."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.statuses import StatusDefinition, StatusType
from servicekit.auth import Principal, Reader, Writer
from servicekit.http import version_from_if_match, with_etag
from status_registry.domain import NewStatus, RuleViolation, StatusPatch
from status_registry.repository import Cursor, StatusRepository, cursor_after
from status_registry.services import Conflict, NotFound, PreconditionFailed, Registry

router = APIRouter(prefix="/v1/statuses", tags=["statuses"])


class StatusPage(BaseModel):
    items: list[StatusDefinition]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statuses: list[NewStatus] = Field(max_length=1000)


class SyncResult(BaseModel):
    created: list[str]
    updated: list[str]
    restored: list[str]
    archived: list[str]
    unchanged: list[str]
    statuses: list[StatusDefinition]


def registry(request: Request, principal: Principal) -> Registry:
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    return Registry(
        runtime.pool, principal.partner_id, settings.topic_status_definitions, runtime.relay, settings.publish_wait_s
    )


def _status_of(exc: Exception) -> int:
    if isinstance(exc, NotFound):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, PreconditionFailed):
        return status.HTTP_412_PRECONDITION_FAILED
    return status.HTTP_409_CONFLICT


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RuleViolation):
        detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "rule_violation"}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": f"no status with code '{exc}'"}, status_code=404)
    if isinstance(exc, asyncpg.UniqueViolationError):
        message = "a concurrent change took this code or the initial slot first; read and retry"
        return JSONResponse({"detail": message}, status_code=409)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors become specific 4xx answers, never a 500."""
    for error in (NotFound, Conflict, PreconditionFailed, RuleViolation, asyncpg.UniqueViolationError):
        app.add_exception_handler(error, _domain_error)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StatusDefinition)
async def create_status(new: NewStatus, request: Request, response: Response, who: Writer) -> StatusDefinition:
    created = await registry(request, who).create(new)
    response.headers["Location"] = f"/v1/statuses/{created.code}"
    return with_etag(response, created)


@router.get("", response_model=StatusPage)
async def list_statuses(
    request: Request,
    who: Reader,
    type: StatusType | None = None,
    include_archived: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StatusPage:
    try:
        after = Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor is malformed; use next_cursor as given"
        ) from exc
    async with request.app.state.runtime.pool.acquire() as conn:
        repo = StatusRepository(conn, who.partner_id)
        items = await repo.page(status_type=type, include_archived=include_archived, after=after, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return StatusPage(items=items, next_cursor=cursor_after(items[-1]).encode() if more else None)


@router.get("/{code}", response_model=StatusDefinition)
async def get_status(code: str, request: Request, response: Response, who: Reader) -> StatusDefinition:
    return with_etag(response, await registry(request, who).get(code))


@router.patch("/{code}", response_model=StatusDefinition)
async def update_status(
    code: str,
    patch: StatusPatch,
    request: Request,
    response: Response,
    who: Writer,
    if_match: Annotated[str | None, Header()] = None,
) -> StatusDefinition:
    version = version_from_if_match(if_match, required=True, what="the status")
    assert version is not None
    return with_etag(response, await registry(request, who).update(code, patch, version))


@router.delete("/{code}", response_model=StatusDefinition)
async def archive_status(
    code: str,
    request: Request,
    response: Response,
    who: Writer,
    if_match: Annotated[str | None, Header()] = None,
) -> StatusDefinition:
    """Archive: the status can no longer be newly assigned, stays readable on historical orders."""
    version = version_from_if_match(if_match, required=False)
    return with_etag(response, await registry(request, who).set_archived(code, True, version))


@router.post("/{code}/restore", response_model=StatusDefinition)
async def restore_status(code: str, request: Request, response: Response, who: Writer) -> StatusDefinition:
    return with_etag(response, await registry(request, who).set_archived(code, False))


@router.put("", response_model=SyncResult)
async def sync_statuses(body: SyncRequest, request: Request, who: Writer) -> SyncResult:
    """Bulk sync: the partner's full list. Creates, updates, restores and archives to match; idempotent."""
    plan, statuses = await registry(request, who).sync(body.statuses)
    return SyncResult(
        created=[s.code for s in plan.create],
        updated=[d.code for d, _ in plan.update],
        restored=[d.code for d, _ in plan.restore],
        archived=[d.code for d in plan.archive],
        unchanged=[d.code for d in plan.unchanged],
        statuses=statuses,
    )
