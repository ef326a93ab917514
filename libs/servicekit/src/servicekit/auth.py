"""Partner authentication: the identity service's access tokens, carrying the partner id and scopes.

Every HTTP query is scoped to `Principal.partner_id`; nothing in a request body or path can
choose another partner.

A token is an API client's (from `POST {TOKEN_ISSUER}/oauth/token`), or the console's for its signed-in user
(identity's own client, docs/identity.md): signed with an asymmetric key (Ed25519 or ES256), verified with the
issuer's JWKS, refused at once once its client is revoked (`servicekit.jwks`). No service holds a signing key.
Its scopes name a resource and an action (`orders:write`, `contracts.identity.Scope`). Each route names the one
scope it needs (`OrdersWriter`...); the OpenAPI document declares the OAuth2 client-credentials scheme with every
scope, and each operation the scope it needs. A token without it is a 403 `insufficient_scope` naming the scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes

from contracts.identity import Scope
from servicekit.errors import Forbidden, Unauthorized
from servicekit.jwks import InvalidToken, JwksVerifier
from servicekit.settings import ServiceSettings

SCOPE_DESCRIPTIONS = {
    Scope.STATUSES_READ: "Read the partner's order statuses",
    Scope.STATUSES_WRITE: "Create, change, archive and reorder order statuses",
    Scope.ORDERS_READ: "Read orders, their history, analytics and segments",
    Scope.ORDERS_WRITE: "Create orders and set their statuses",
    Scope.CAMPAIGNS_READ: "Read campaigns, previews and statistics",
    Scope.CAMPAIGNS_WRITE: "Create, change, activate, pause and archive campaigns",
    Scope.MESSAGES_READ: "Read SMS messages and opt-outs",
    Scope.MESSAGES_WRITE: "Opt numbers out and in, replay failed messages",
    Scope.WEBHOOKS_MANAGE: "Manage webhook endpoints",
    Scope.CLIENTS_MANAGE: "Manage API clients",
}
TOKEN_PATH = "/oauth/token"
SECURITY_SCHEME = "partnerToken"


@dataclass(frozen=True)
class Principal:
    partner_id: str
    scopes: frozenset[str]
    client_id: str  # the API client, or `console` for the console's users
    actor: str | None = None  # the console's signed-in user (`act.sub`); None for an API client acting as itself

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


_oauth2 = OAuth2(
    flows=OAuthFlows(
        # The issuer's address is the deployment's: `document_token_url` writes it into each OpenAPI document.
        clientCredentials=OAuthFlowClientCredentials(tokenUrl=TOKEN_PATH, scopes=dict(SCOPE_DESCRIPTIONS))
    ),
    scheme_name=SECURITY_SCHEME,
    description="An access token of the identity service (OAuth2 client credentials)",
    auto_error=False,
)


async def current_principal(
    request: Request, security_scopes: SecurityScopes, authorization: Annotated[str | None, Depends(_oauth2)]
) -> Principal:
    """The caller, who must hold every scope the route asks for (FastAPI's `Security(..., scopes=...)`)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    principal = await _verified(request, token.strip())
    for scope in security_scopes.scopes:
        if not principal.allows(scope):
            raise Forbidden(f"token lacks the '{scope}' scope", code="insufficient_scope", scope=scope)
    return principal


async def _verified(request: Request, token: str) -> Principal:
    verifier: JwksVerifier = request.app.state.token_verifier
    try:
        identity = await verifier.verify(token)
    except InvalidToken as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    return Principal(
        partner_id=identity.partner_id, scopes=identity.scopes, client_id=identity.client_id, actor=identity.actor
    )


# Route parameters: the caller, who must hold the named scope (each operation's scope is in the OpenAPI document).
StatusesReader = Annotated[Principal, Security(current_principal, scopes=[Scope.STATUSES_READ])]
StatusesWriter = Annotated[Principal, Security(current_principal, scopes=[Scope.STATUSES_WRITE])]
OrdersReader = Annotated[Principal, Security(current_principal, scopes=[Scope.ORDERS_READ])]
OrdersWriter = Annotated[Principal, Security(current_principal, scopes=[Scope.ORDERS_WRITE])]
CampaignsReader = Annotated[Principal, Security(current_principal, scopes=[Scope.CAMPAIGNS_READ])]
CampaignsWriter = Annotated[Principal, Security(current_principal, scopes=[Scope.CAMPAIGNS_WRITE])]
MessagesReader = Annotated[Principal, Security(current_principal, scopes=[Scope.MESSAGES_READ])]
MessagesWriter = Annotated[Principal, Security(current_principal, scopes=[Scope.MESSAGES_WRITE])]
WebhooksManager = Annotated[Principal, Security(current_principal, scopes=[Scope.WEBHOOKS_MANAGE])]
ClientsManager = Annotated[Principal, Security(current_principal, scopes=[Scope.CLIENTS_MANAGE])]


def document_token_url(schema: dict[str, Any], settings: ServiceSettings) -> None:
    """Point the OpenAPI document's client-credentials flow at the deployment's issuer."""
    scheme = schema.get("components", {}).get("securitySchemes", {}).get(SECURITY_SCHEME)
    if scheme is not None:
        scheme["flows"]["clientCredentials"]["tokenUrl"] = settings.token_issuer.rstrip("/") + TOKEN_PATH
