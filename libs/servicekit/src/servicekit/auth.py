"""Partner authentication: JWT bearer tokens carrying the partner id and scopes.

Every HTTP query is scoped to `Principal.partner_id`; nothing in a request body or path can
choose another partner.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from servicekit.errors import Forbidden, Unauthorized
from servicekit.settings import ServiceSettings

SCOPES = ("read", "write")
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    partner_id: str
    scopes: frozenset[str]


def issue_token(
    settings: ServiceSettings,
    partner_id: str,
    scopes: tuple[str, ...] = SCOPES,
    ttl: timedelta = timedelta(days=30),
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": partner_id,
        "scope": " ".join(scopes),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_token(settings: ServiceSettings, token: str) -> Principal:
    claims = jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=[ALGORITHM],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        options={"require": ["sub", "exp", "iss", "aud"]},
    )
    return Principal(partner_id=str(claims["sub"]), scopes=frozenset(str(claims.get("scope", "")).split()))


_bearer = HTTPBearer(auto_error=False)


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer token")
    settings: ServiceSettings = request.app.state.settings
    try:
        return decode_token(settings, credentials.credentials)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """FastAPI dependency: the caller's principal, which must hold `scope`."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"token lacks the '{scope}' scope", code="insufficient_scope")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
"""A route parameter: the caller, who must hold the `read` scope."""
Writer = Annotated[Principal, Depends(require("write"))]
"""A route parameter: the caller, who must hold the `write` scope."""


def main(argv: list[str] | None = None) -> None:
    """`make token PARTNER=<id> [SCOPES=read,write]`: print a token and nothing else."""
    parser = argparse.ArgumentParser(description="Issue a partner JWT for the platform's HTTP APIs")
    parser.add_argument("partner")
    parser.add_argument("--scopes", default=",".join(SCOPES))
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    scopes = tuple(s for s in args.scopes.replace(" ", ",").split(",") if s)
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        parser.error(f"unknown scopes {sorted(unknown)}; known: {', '.join(SCOPES)}")
    sys.stdout.write(issue_token(ServiceSettings(), args.partner, scopes, timedelta(days=args.days)) + "\n")


if __name__ == "__main__":
    main()
