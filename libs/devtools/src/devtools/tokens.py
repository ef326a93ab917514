"""Access tokens for the tests and the tools, always from an issuer the services verify as they do in production.

* `TestIssuer`: for tests that run a service in process without the identity service: an Ed25519 key of its own,
  its JWKS served over real HTTP on a local port, and tokens shaped as identity's (RFC 9068). The test session
  points every service's `TOKEN_ISSUER` at it.
* `IdentityTokens`: tokens from a running identity service, as the console gets them: its own client (`console`,
  CONSOLE_CLIENT_SECRET) asks for a token of the partner it names (docs/identity.md). `make token`, `make run`,
  the e2e platform and the bench use it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Generator, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OKPKey

from contracts.identity import FIRST_PARTY_CLIENT_ID, Scope
from servicekit.jwks import JWKS_PATH

AUDIENCE = "order-status-api"
DEV_CONSOLE_CLIENT_SECRET = "local-dev-console-client-secret-change-me-0123"  # identity's and the console's default


def scopes_of(names: Iterable[str]) -> list[str]:
    """Scope names, where `read` and `write` are shorthands: every `*:read` scope, and every `*:write` and `*:manage`
    one (what a viewer's and a marketer's console token hold)."""
    scopes: set[str] = set()
    for name in names:
        if name == "read":
            scopes |= {s.value for s in Scope if s.value.endswith(":read")}
        elif name == "write":
            scopes |= {s.value for s in Scope if not s.value.endswith(":read")}
        else:
            scopes.add(Scope(name).value)
    return sorted(scopes)


class TestIssuer:
    """A token issuer for in-process tests (see the module docstring). `close()` stops its HTTP server."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self) -> None:
        self._key = OKPKey.generate_key("Ed25519", parameters={"kid": f"test-{uuid.uuid4().hex[:8]}", "use": "sig"})
        jwks = json.dumps({"keys": [self._key.as_dict(private=False)]}).encode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _serving(jwks))
        threading.Thread(target=self._server.serve_forever, name="test-issuer", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def token(
        self, partner_id: str, scopes: Iterable[str] = ("read", "write"), *, client_id: str = "tests", actor: str = ""
    ) -> str:
        """`actor`: the person the client acts for (`act.sub`), as identity writes for the console's users."""
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.url, "aud": AUDIENCE, "sub": partner_id, "client_id": client_id,
            "scope": " ".join(scopes_of(scopes)), "iat": now, "exp": now + 3600, "jti": str(uuid.uuid4()),
        }  # fmt: skip
        if actor:
            claims["act"] = {"sub": actor}
        header = {"alg": "Ed25519", "typ": "at+jwt", "kid": self._key.kid}
        return jwt.encode(header, claims, self._key, algorithms=["Ed25519"])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _serving(jwks: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == JWKS_PATH
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/jwk-set+json")
            self.end_headers()
            self.wfile.write(jwks if found else b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class IdentityTokens:
    """Tokens of a running identity service, for any partner, through the platform's own client."""

    def __init__(
        self,
        identity_url: str,
        secret: str = DEV_CONSOLE_CLIENT_SECRET,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = identity_url.rstrip("/")
        self._secret = secret
        self._transport = transport  # an in-process identity's (httpx.ASGITransport), in its own tests

    async def token(self, partner_id: str, scopes: Iterable[str] = ("read", "write"), *, actor: str = "") -> str:
        form = {"grant_type": "client_credentials", "partner_id": partner_id, "scope": " ".join(scopes_of(scopes))}
        async with httpx.AsyncClient(timeout=10, transport=self._transport) as client:
            answer = await client.post(
                f"{self._url}/oauth/token",
                data=form | ({"actor": actor} if actor else {}),
                auth=(FIRST_PARTY_CLIENT_ID, self._secret),
            )
        if answer.status_code != 200:
            raise RuntimeError(f"identity refused a token of {partner_id}: {answer.status_code} {answer.text}")
        token: str = answer.json()["access_token"]
        return token

    def auth(self, partner_id: str, scopes: Iterable[str] = ("read", "write")) -> httpx.Auth:
        """An httpx auth that gets the token at the first request and keeps it (15 minutes outlast any test)."""
        return _LazyBearer(self, partner_id, tuple(scopes))


class _LazyBearer(httpx.Auth):
    def __init__(self, tokens: IdentityTokens, partner_id: str, scopes: tuple[str, ...]) -> None:
        self._tokens, self._partner_id, self._scopes = tokens, partner_id, scopes
        self._token: str | None = None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._token is None:
            self._token = await self._tokens.token(self._partner_id, self._scopes)
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("IdentityTokens' auth is for httpx.AsyncClient")


def main(argv: list[str] | None = None) -> None:
    """`make token PARTNER=<id> [SCOPES=orders:read,orders:write]`: print a token of the partner from the running
    identity service (TOKEN_ISSUER, CONSOLE_CLIENT_SECRET), and nothing else."""
    parser = argparse.ArgumentParser(description="Print an access token of a partner, from the identity service")
    parser.add_argument("partner")
    parser.add_argument("--scopes", default="read,write", help="scope names, or read / write for all of a kind")
    args = parser.parse_args(argv)
    scopes = [s for s in args.scopes.replace(" ", ",").split(",") if s]
    try:
        scopes_of(scopes)
    except ValueError:
        parser.error(f"unknown scopes in {scopes}; known: read, write, {', '.join(s.value for s in Scope)}")
    issuer = os.environ.get("TOKEN_ISSUER", "http://127.0.0.1:8006")
    tokens = IdentityTokens(issuer, os.environ.get("CONSOLE_CLIENT_SECRET", DEV_CONSOLE_CLIENT_SECRET))
    try:
        sys.stdout.write(asyncio.run(tokens.token(args.partner, scopes)) + "\n")
    except (httpx.HTTPError, RuntimeError) as exc:
        sys.exit(f"token: no token from identity at {issuer} ({exc}); is it running (make up)?")


if __name__ == "__main__":
    main()
