"""The services' public HTTP APIs, as the console calls them for a signed-in user.

Every call carries an access token of that user's partner, with the scopes of the user's role, which the console
gets from identity as the platform's own client (`console`: docs/identity.md) naming the partner and the user
(`act.sub`), and keeps until a minute before it expires: the services scope every query to the token's partner, so
the console cannot reach another partner's data even by mistake.
A service that does not answer raises `BackendUnavailable` (the page shows a banner; other pages keep working);
an answer of 4xx raises `BackendProblem` with the service's problem document (field errors in `errors`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx

from console.settings import ConsoleSettings
from contracts.identity import FIRST_PARTY_CLIENT_ID
from servicekit.ops import Inspector


class Service(StrEnum):
    REGISTRY = "status-registry"
    ORDERS = "orders"
    CAMPAIGNS = "campaigns"
    NOTIFIER = "notifier"
    IDENTITY = "identity"
    WEBHOOKS = "webhooks"


class BackendUnavailable(Exception):
    def __init__(self, service: Service, reason: str) -> None:
        super().__init__(f"{service} is unavailable: {reason}")
        self.service = service
        self.reason = reason


class InputTooLong(Exception):
    """A value the user typed makes a URL longer than a backend call can carry (httpx allows 64 KB of query): no
    service would take it, so it is not sent."""


@dataclass
class BackendProblem(Exception):
    """A refusal from a service: its RFC 9457 problem document."""

    service: Service
    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service} answered {self.status}: {self.detail}"

    @property
    def code(self) -> str:
        return str(self.problem.get("code", ""))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    def errors(self) -> list[dict[str, Any]]:
        """The refused fields: `field` (dotted path in its location), `message`, `type`."""
        return [e for e in self.problem.get("errors") or () if isinstance(e, dict)]


@dataclass(frozen=True)
class Response:
    body: Any
    etag: str | None


def segment(value: str) -> str:
    """A value as one segment of a backend's path: a "/", "?", "#" or "%" in an order id or a phone stays part of
    it, and a character a URL cannot hold (a NUL) is escaped (the service then refuses it in words)."""
    return quote(value, safe="")


def base_urls(settings: ConsoleSettings) -> dict[Service, str]:
    return {
        Service.REGISTRY: settings.registry_url,
        Service.ORDERS: settings.orders_url,
        Service.CAMPAIGNS: settings.campaigns_url,
        Service.NOTIFIER: settings.notifier_url,
        Service.IDENTITY: settings.identity_url,
        Service.WEBHOOKS: settings.webhooks_url,
    }


class Backends:
    """One HTTP connection pool for all four services; `as_partner` gives the calls of one user."""

    def __init__(self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.urls = base_urls(settings)
        self.http = httpx.AsyncClient(timeout=settings.backend_timeout_s, transport=transport)
        self.tokens = TokenCache(self)

    async def close(self) -> None:
        await self.http.aclose()

    def as_partner(self, partner_id: str, scopes: tuple[str, ...], actor: str) -> PartnerApi:
        return PartnerApi(self, TokenRequest(partner_id, scopes, actor))

    async def ready(self, service: Service) -> tuple[bool, dict[str, Any]]:
        """A service's /readyz: whether it is ready, and its checks (empty when it does not answer)."""
        try:
            answer = await self.http.get(f"{self.urls[service]}/readyz", timeout=2)
            return answer.status_code == 200, answer.json().get("checks", {})
        except (httpx.HTTPError, ValueError):
            return False, {}


@dataclass(frozen=True)
class TokenRequest:
    partner_id: str
    scopes: tuple[str, ...]
    actor: str  # the signed-in user, the token's `act.sub`


EXPIRY_MARGIN_S = 60  # a token is renewed this long before it expires, so no call carries an expired one


class TokenCache:
    """Identity's tokens, one per (partner, scopes, user), kept until a minute before they expire."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._held: dict[TokenRequest, tuple[str, float]] = {}

    async def token(self, wanted: TokenRequest) -> str:
        held = self._held.get(wanted)
        if held is not None and held[1] > time.monotonic():
            return held[0]
        token, expires_in = await self._fetch(wanted)
        self._held[wanted] = (token, time.monotonic() + expires_in - EXPIRY_MARGIN_S)
        return token

    async def _fetch(self, wanted: TokenRequest) -> tuple[str, float]:
        settings = self._backends.settings
        form = {"grant_type": "client_credentials", "partner_id": wanted.partner_id, "scope": " ".join(wanted.scopes),
                "actor": wanted.actor}  # fmt: skip
        secret = settings.console_client_secret.get_secret_value()
        try:
            answer = await self._backends.http.post(
                f"{settings.identity_url}/oauth/token", data=form, auth=(FIRST_PARTY_CLIENT_ID, secret)
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(Service.IDENTITY, type(exc).__name__) from exc
        if answer.status_code != 200:  # a misconfigured secret or identity in trouble: nothing a user can mend
            raise BackendUnavailable(Service.IDENTITY, f"no token: HTTP {answer.status_code}")
        body = answer.json()
        return str(body["access_token"]), float(body["expires_in"])


class PartnerApi:
    def __init__(self, backends: Backends, token: TokenRequest) -> None:
        self.backends = backends
        self.token = token

    async def call(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        etag: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        bearer = {"Authorization": f"Bearer {await self.backends.tokens.token(self.token)}"}
        headers = bearer | ({"If-Match": etag} if etag else {}) | (headers or {})
        url = f"{self.backends.urls[service]}{path}"
        query = {k: v for k, v in (params or {}).items() if v not in (None, "", [])}
        try:
            answer = await self.backends.http.request(method, url, params=query, json=json, headers=headers)
        except httpx.InvalidURL as exc:
            raise InputTooLong() from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(service, type(exc).__name__) from exc
        if answer.status_code >= 500:
            raise BackendUnavailable(service, f"HTTP {answer.status_code}")
        body = _json(answer)
        if answer.status_code >= 400:
            problem = body if isinstance(body, dict) else {"detail": answer.text}
            raise BackendProblem(service, answer.status_code, problem)
        return Response(body, answer.headers.get("etag"))

    async def get(self, service: Service, path: str, **params: Any) -> Any:
        return (await self.call(service, "GET", path, params=params)).body

    async def post(self, service: Service, path: str, body: Any) -> Any:
        """A JSON POST; the body of the answer."""
        return (await self.call(service, "POST", path, json=body)).body

    async def pages(self, service: Service, path: str, *, limit: int = 500, **params: Any) -> list[Any]:
        """Every item of a cursor-paged list (for the partner's statuses and campaigns: small lists)."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page = await self.get(service, path, limit=limit, cursor=cursor, **params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


class OpsKafka:
    """The ops pages' connection to Kafka, opened on first use and kept; a broker that is down leaves it closed,
    and the next page tries again."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._inspector: Inspector | None = None
        self._opening = asyncio.Lock()  # two pages at once open one connection, not two (one of them leaked)

    async def get(self) -> Inspector:
        async with self._opening:
            return await self._open()

    async def _open(self) -> Inspector:
        if self._inspector is None:
            inspector = Inspector(self.bootstrap)
            try:
                await asyncio.wait_for(inspector.start(), 5)
            except BaseException:
                await inspector.stop()
                raise
            self._inspector = inspector
        return self._inspector

    async def reset(self) -> None:
        """After an error: the next page opens new connections."""
        inspector, self._inspector = self._inspector, None
        if inspector is not None:
            await inspector.stop()

    async def close(self) -> None:
        await self.reset()
