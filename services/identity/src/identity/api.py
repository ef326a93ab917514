"""Identity's HTTP API: a partner's API clients (`/v1/clients`), the OAuth2 token endpoint and the JWKS.

The client routes need `clients:manage`: an API client's token with that scope, or an HS256 partner token with
`write` (the console's, until it gets its tokens from identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contracts.identity import FIRST_PARTY_CLIENT_ID, ClientId
from contracts.primitives import PARTNER_ID_PATTERN
from contracts.text import text_problem
from identity.domain import (
    ACTOR_PATTERN,
    ApiClient,
    AuditEntry,
    CreatedClient,
    NewClient,
    OAuthError,
    RotatedSecret,
    RotateSecret,
    invalid_request,
    parse_form,
    token_request,
)
from identity.keys import KeyRing
from identity.repository import ClientRepository, client_position
from identity.services import Clients, SecretHasher, TokenIssuer
from identity.settings import IdentitySettings
from servicekit.app import parts_dependency, runtime_of
from servicekit.auth import ClientsManager, Principal
from servicekit.errors import problems
from servicekit.http import with_etag
from servicekit.pagination import decode_cursor, page_of

TOKEN_PATH = "/oauth/token"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class IdentityParts:
    """What start-up builds for the routes."""

    keys: KeyRing
    hasher: SecretHasher
    issuer: TokenIssuer


Parts = Annotated[IdentityParts, Depends(parts_dependency(IdentityParts))]

clients_router = APIRouter(prefix="/v1/clients", tags=["API clients"])
oauth_router = APIRouter(tags=["OAuth2"])

# --- who asks, for the audit -----------------------------------------------------------------------


def actor_of(
    who: ClientsManager,
    x_actor: Annotated[
        str | None,
        Header(
            pattern=ACTOR_PATTERN,
            description="Who acts, for the audit (the console sends its signed-in user); "
            "the token's partner when absent",
        ),
    ] = None,
) -> str:
    if who.client_id != FIRST_PARTY_CLIENT_ID:  # an API client acts as itself: it names no other actor
        return f"client:{who.client_id}"
    return x_actor if x_actor else f"partner:{who.partner_id}"


def _clients(request: Request, who: Principal, actor: str, parts: IdentityParts) -> Clients:
    runtime = runtime_of(request)
    settings: IdentitySettings = request.app.state.settings
    return Clients(runtime.pool, who.partner_id, actor, parts.hasher, settings, runtime.relay)


class ClientPage(BaseModel):
    items: list[ApiClient]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


@clients_router.get("", response_model=ClientPage)
async def list_clients(
    request: Request,
    who: ClientsManager,
    include_revoked: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ClientPage:
    after = decode_cursor(cursor, datetime, str) if cursor else None
    async with runtime_of(request).pool.acquire() as conn:
        rows = await ClientRepository(conn, who.partner_id).page(
            after=after, limit=limit + 1, include_revoked=include_revoked
        )
    items, next_cursor = page_of(rows, limit, client_position)
    return ClientPage(items=items, next_cursor=next_cursor)


@clients_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedClient,
    responses=problems(409, s409="`client_name_taken`: a client of that name exists (and is not revoked)"),
)
async def create_client(
    new: NewClient,
    request: Request,
    response: Response,
    who: ClientsManager,
    parts: Parts,
    x_actor: Annotated[str, Depends(actor_of)],
) -> CreatedClient:
    """A new client and its secret, shown in this answer only."""
    created = await _clients(request, who, x_actor, parts).create(new)
    response.headers["Location"] = f"/v1/clients/{created.client_id}"
    response.headers["Cache-Control"] = "no-store"
    return with_etag(response, created)


@clients_router.get("/{client_id}", response_model=ApiClient, responses=problems(404))
async def get_client(
    client_id: ClientId, request: Request, response: Response, who: ClientsManager, parts: Parts
) -> ApiClient:
    return with_etag(response, await _clients(request, who, "", parts).get(client_id))


@clients_router.post(
    "/{client_id}/rotate-secret",
    response_model=RotatedSecret,
    responses=problems(404, 409, s409="`client_revoked`: a revoked client has no secret"),
)
async def rotate_secret(
    client_id: ClientId,
    request: Request,
    response: Response,
    who: ClientsManager,
    parts: Parts,
    x_actor: Annotated[str, Depends(actor_of)],
    body: RotateSecret | None = None,
) -> RotatedSecret:
    """A new secret, shown in this answer only; the current one keeps working for the grace period."""
    grace = body.grace_period_s if body else None
    rotated = await _clients(request, who, x_actor, parts).rotate_secret(client_id, grace)
    response.headers["Cache-Control"] = "no-store"
    return with_etag(response, rotated)


@clients_router.post("/{client_id}/revoke", response_model=ApiClient, responses=problems(404))
async def revoke_client(
    client_id: ClientId,
    request: Request,
    response: Response,
    who: ClientsManager,
    parts: Parts,
    x_actor: Annotated[str, Depends(actor_of)],
) -> ApiClient:
    """For good: no new token, and every service refuses its tokens within a second. Repeating it is a no-op."""
    return with_etag(response, await _clients(request, who, x_actor, parts).revoke(client_id))


@clients_router.get("/{client_id}/audit", response_model=AuditPage, responses=problems(404))
async def client_audit(
    client_id: ClientId,
    request: Request,
    who: ClientsManager,
    parts: Parts,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Who created the client, rotated its secret and revoked it, oldest first."""
    await _clients(request, who, "", parts).get(client_id)
    (after,) = decode_cursor(cursor, int) if cursor else (None,)
    async with runtime_of(request).pool.acquire() as conn:
        rows = await ClientRepository(conn, who.partner_id).audit_page(client_id, after=after, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda entry: (entry.id,))
    return AuditPage(items=items, next_cursor=next_cursor)


# --- OAuth2 ----------------------------------------------------------------------------------------


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    scope: str = Field(description="The scopes granted, space-separated")


class OAuthErrorBody(BaseModel):
    """RFC 6749 5.2 (`error`, `error_description`), with the problem members every error of the platform has."""

    error: str = Field(description="invalid_request, invalid_client, invalid_scope or unsupported_grant_type")
    error_description: str
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="The same as `error`")


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_TOKEN_FORM_SCHEMA = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {"type": "string", "description": "Space-separated; at most the client's scopes (default: all)"},
        "client_id": {"type": "string", "description": "client_secret_post (else HTTP Basic)"},
        "client_secret": {"type": "string", "description": "client_secret_post (else HTTP Basic)"},
        "partner_id": {
            "type": "string",
            "pattern": PARTNER_ID_PATTERN,
            "description": "Only the platform's own client (`console`): the partner the token is for",
        },
        "actor": {
            "type": "string",
            "pattern": ACTOR_PATTERN,
            "description": "Only the platform's own client: who acts (the token's `act.sub`, RFC 8693)",
        },
    },
}


def _oauth_error(error: OAuthError) -> JSONResponse:
    body = OAuthErrorBody(
        error=error.error,
        error_description=error.description,
        title=HTTPStatus(error.status).phrase,
        status=error.status,
        detail=error.description,
        code=error.error,
    )
    headers = dict(_NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="identity", charset="UTF-8"'
    return JSONResponse(body.model_dump(), status_code=error.status, headers=headers)


_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "`invalid_request`, `invalid_scope` or `unsupported_grant_type` (RFC 6749 5.2)",
        "model": OAuthErrorBody,
    },
    401: {"description": "`invalid_client`: unknown client, wrong secret, revoked or expired", "model": OAuthErrorBody},
}


@oauth_router.post(
    TOKEN_PATH,
    response_model=TokenResponse,
    responses=_OAUTH_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {_FORM: {"schema": _TOKEN_FORM_SCHEMA}}}},
)
async def token(request: Request, parts: Parts) -> JSONResponse:
    """RFC 6749 client credentials grant: an access token (a JWT signed with the key the JWKS publishes) for
    the client authenticated by HTTP Basic (`client_secret_basic`) or the form (`client_secret_post`)."""
    try:
        form = await _token_form(request)
        issued = await parts.issuer.issue(token_request(form, request.headers.get("authorization")))
    except OAuthError as error:
        return _oauth_error(error)
    body = TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope)
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


async def _token_form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != _FORM:
        raise invalid_request(f"send the parameters as {_FORM} (RFC 6749 4.4.2)")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("the form is not UTF-8 application/x-www-form-urlencoded") from None
    form = parse_form(pairs)
    for name, value in form.items():  # only the parameters read: the others are ignored, whatever they hold
        if text_problem(value):
            raise invalid_request(f"'{name}' holds a character that is not allowed")
    return form


class JwkSetResponse(JSONResponse):
    """RFC 7517 8.5.1's media type, which the OpenAPI document then names too (it said application/json)."""

    media_type = "application/jwk-set+json"


@oauth_router.get(
    JWKS_PATH,
    tags=["OAuth2"],
    summary="The public keys that verify identity's access tokens",
    response_class=JwkSetResponse,
)
async def jwks(request: Request, parts: Parts) -> JwkSetResponse:
    """Every key that signs, will sign soon (published ahead) or signed tokens that have not expired yet."""
    settings: IdentitySettings = request.app.state.settings
    return JwkSetResponse(parts.keys.jwks(), headers={"Cache-Control": f"public, max-age={settings.jwks_max_age_s}"})
