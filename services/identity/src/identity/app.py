"""Wiring of identity: database, outbox relay, signing keys, HTTP API. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from contracts.identity import ApiClientRevoked
from contracts.topics import Topic
from identity.api import TOKEN_PATH, IdentityParts, clients_router, oauth_router
from identity.keys import KeyCipher, KeyRing, ensure_signing_key
from identity.services import SecretHasher, TokenIssuer
from identity.settings import IdentitySettings
from servicekit.app import Publishes, Runtime, ServiceSpec, StartupHook, create_service_app, parts_of, serve
from servicekit.http import BodyLimits, replaying

PUBLISHES = (
    Publishes(
        Topic.CLIENT_REVOCATIONS,
        "Every revoked API client (compacted; key partner:client_id): services refuse its tokens at once",
        (ApiClientRevoked,),
    ),
)


class TokenFormBodyLimits(BodyLimits):
    """The platform's body rules, except that the token endpoint takes the form RFC 6749 prescribes
    (application/x-www-form-urlencoded) instead of JSON: its body is held to the same size limit, and the route
    checks its media type and encoding itself."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == TOKEN_PATH:
            body = await self._read(receive)
            if body is None:
                await self._reject(scope, receive, send, 413, f"body exceeds {self.max_body_bytes} bytes")
                return
            await self.app(scope, replaying(body, receive), send)
            return
        await super().__call__(scope, receive, send)


def _with_token_form(app: FastAPI) -> None:
    for index, middleware in enumerate(app.user_middleware):
        kind: object = middleware.cls
        if kind is BodyLimits:
            limit: int = app.state.settings.max_body_bytes
            app.user_middleware[index] = Middleware(TokenFormBodyLimits, max_body_bytes=limit)


def _start(settings: IdentitySettings, tasks: list[asyncio.Task[None]]) -> StartupHook:
    async def start(runtime: Runtime) -> None:
        cipher = KeyCipher.from_secret(settings.key_encryption_secret.get_secret_value())
        await ensure_signing_key(runtime.pool, cipher)
        keys = KeyRing(runtime.pool, settings)
        await keys.refresh()
        tasks.append(asyncio.create_task(keys.run(), name="signing-keys"))
        assert runtime.verifier is not None
        runtime.verifier.use_keys(keys)  # the issuer verifies the tokens of its own routes with its own keys
        hasher = SecretHasher(settings.secret_verifications)
        runtime.parts = IdentityParts(
            keys=keys, hasher=hasher, issuer=TokenIssuer(runtime.pool, hasher, keys, settings)
        )

    return start


def _stop(tasks: list[asyncio.Task[None]]) -> StartupHook:
    async def stop(runtime: Runtime) -> None:
        parts_of(runtime, IdentityParts)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()

    return stop


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    tasks: list[asyncio.Task[None]] = []
    spec = ServiceSpec(
        title="Identity",
        description="API clients per partner, the OAuth2 token endpoint (client credentials) and the JWKS that "
        "verifies its tokens.",
        migrations=Path(__file__).parent / "migrations",
        routers=[clients_router, oauth_router],
        on_startup=_start(settings, tasks),
        on_shutdown=_stop(tasks),
        publishes=PUBLISHES,
    )
    app = create_service_app(settings, spec)
    _with_token_form(app)
    return app


def main() -> None:
    serve(IdentitySettings(), create_app)


if __name__ == "__main__":
    main()
