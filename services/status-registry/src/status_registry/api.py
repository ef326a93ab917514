"""HTTP API of the registry: CRUD of a partner's statuses, scoped by the caller's token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contracts.primitives import Slug
from contracts.statuses import StatusDefinition, StatusType
from servicekit.auth import Principal, StatusesReader, StatusesWriter
from servicekit.errors import problems
from servicekit.http import version_from_if_match, with_etag
from servicekit.pagination import decode_cursor, page_of
from status_registry.domain import NewStatus, StatusPatch
from status_registry.repository import StatusRepository, position_of
from status_registry.services import Registry

router = APIRouter(prefix="/v1/statuses", tags=["statuses"])


class StatusPage(BaseModel):
    items: list[StatusDefinition]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statuses: list[NewStatus] = Field(max_length=1000)


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codes: list[Slug] = Field(
        max_length=1000, description="Every current (not archived) status of the type, each once, in the new order"
    )


class TypeOrder(BaseModel):
    statuses: list[StatusDefinition] = Field(description="The type's current statuses in their new order")


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


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StatusDefinition,
    responses=problems(409, s409="The code exists already, another initial status of the type exists, or a race"),
)
async def create_status(new: NewStatus, request: Request, response: Response, who: StatusesWriter) -> StatusDefinition:
    created = await registry(request, who).create(new)
    response.headers["Location"] = f"/v1/statuses/{created.code}"
    return with_etag(response, created)


@router.get("", response_model=StatusPage)
async def list_statuses(
    request: Request,
    who: StatusesReader,
    type: StatusType | None = None,
    include_archived: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StatusPage:
    after = decode_cursor(cursor, int, int, str) if cursor else None
    async with request.app.state.runtime.pool.acquire() as conn:
        repo = StatusRepository(conn, who.partner_id)
        rows = await repo.page(status_type=type, include_archived=include_archived, after=after, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, position_of)
    return StatusPage(items=items, next_cursor=next_cursor)


@router.get("/{code}", response_model=StatusDefinition, responses=problems(404))
async def get_status(code: str, request: Request, response: Response, who: StatusesReader) -> StatusDefinition:
    return with_etag(response, await registry(request, who).get(code))


@router.patch("/{code}", response_model=StatusDefinition, responses=problems(404, 409, 412, 428))
async def update_status(
    code: str,
    patch: StatusPatch,
    request: Request,
    response: Response,
    who: StatusesWriter,
    if_match: Annotated[str | None, Header()] = None,
) -> StatusDefinition:
    statuses = registry(request, who)
    version = version_from_if_match(if_match, required=True, what="the status")  # None for `If-Match: *`
    return with_etag(response, await statuses.update(code, patch, version))


@router.delete(
    "/{code}",
    response_model=StatusDefinition,
    responses=problems(404, 409, 412, s409="`status_in_use`: active campaigns name it (`campaigns` lists them)"),
)
async def archive_status(
    code: str,
    request: Request,
    response: Response,
    who: StatusesWriter,
    if_match: Annotated[str | None, Header()] = None,
) -> StatusDefinition:
    """Archive: the status can no longer be newly assigned, stays readable on historical orders."""
    version = version_from_if_match(if_match, required=False)
    return with_etag(response, await registry(request, who).set_archived(code, True, version))


@router.post("/{code}/restore", response_model=StatusDefinition, responses=problems(404, 409))
async def restore_status(code: str, request: Request, response: Response, who: StatusesWriter) -> StatusDefinition:
    return with_etag(response, await registry(request, who).set_archived(code, False))


@router.put(
    "",
    response_model=SyncResult,
    responses=problems(409, s409="`status_in_use`: an active campaign names a status the sync would archive"),
)
async def sync_statuses(body: SyncRequest, request: Request, who: StatusesWriter) -> SyncResult:
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


@router.put(
    "/order/{status_type}",
    response_model=TypeOrder,
    responses=problems(
        409,
        s409="`status_list_changed`: `codes` is not exactly the type's current statuses (one was added or archived)",
    ),
)
async def reorder_statuses(
    status_type: StatusType, body: OrderRequest, request: Request, who: StatusesWriter
) -> TypeOrder:
    """The order of one type's statuses, all at once: positions become 10, 20, 30... in the order given. Idempotent."""
    return TypeOrder(statuses=await registry(request, who).reorder(status_type, body.codes))
