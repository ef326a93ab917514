"""Identity's use cases: a partner's API clients (each change in one transaction with its audit entry, and a
revocation with its event in the outbox), and the token endpoint's client authentication and issuing."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contracts.envelope import Envelope
from contracts.identity import FIRST_PARTY_CLIENT_ID, ApiClientRevoked, Scope
from contracts.topics import Topic, client_revocation_key
from identity.domain import (
    ApiClient,
    AuditAction,
    ClientState,
    CreatedClient,
    InvalidScope,
    NewClient,
    OAuthError,
    RotatedSecret,
    TokenRequest,
    access_token_claims,
    invalid_client,
    new_client_id,
    new_client_secret,
    requested_scopes,
)
from identity.keys import KeyRing
from identity.repository import ClientRepository, Credentials
from identity.settings import IdentitySettings
from servicekit.errors import Conflict, FieldError, InvalidRequest, NotFound
from servicekit.outbox import OutboxRelay, UnitOfWork, unit_of_work

SOURCE = "/services/identity"


class SecretHasher:
    """argon2id hashes of client secrets, computed off the event loop and a few at a time.

    The secrets are 256 random bits, which no guessing reaches whatever the hash costs, so the cost is set for the
    token endpoint rather than against guessing: one pass over 8 MiB (a few milliseconds), and at most `parallel`
    at once, so a burst of token requests neither starves the event loop nor multiplies the memory."""

    def __init__(self, parallel: int) -> None:
        self._hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
        self._slots = asyncio.Semaphore(parallel)

    async def hash(self, secret: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, secret)

    async def matches(self, secret: str, hashes: list[str]) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._any_matches, secret, hashes)

    def _any_matches(self, secret: str, hashes: list[str]) -> bool:
        for stored in hashes:
            try:
                if self._hasher.verify(stored, secret):
                    return True
            except (VerificationError, InvalidHashError):
                continue
        return False


@dataclass(frozen=True)
class Clients:
    """A partner's API clients. `actor` names who asks, for the audit."""

    pool: asyncpg.Pool
    partner_id: str
    actor: str
    hasher: SecretHasher
    settings: IdentitySettings
    relay: OutboxRelay

    @asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[tuple[ClientRepository, UnitOfWork]]:
        async with unit_of_work(self.pool, relay=self.relay, publish_wait_s=self.settings.publish_wait_s) as work:
            yield ClientRepository(work.conn, self.partner_id), work

    async def get(self, client_id: str) -> ApiClient:
        async with self.pool.acquire() as conn:
            return await self._found(ClientRepository(conn, self.partner_id), client_id)

    async def create(self, new: NewClient) -> CreatedClient:
        """Concurrency: creates of the same name race on the partial unique index of live names; one commits,
        the others answer 409 `client_name_taken`."""
        if new.expires_at is not None and new.expires_at <= datetime.now(UTC):
            message = "the expiry must be in the future"
            raise InvalidRequest([FieldError(location="body", field="expires_at", message=message, type="in_past")])
        secret = new_client_secret()
        secret_hash = await self.hasher.hash(secret)  # before the transaction: no lock held while it computes
        scopes = [s.value for s in new.scopes]
        async with self._unit_of_work() as (repo, _):
            created = await repo.insert(new_client_id(), new.name, scopes, new.expires_at, self.actor, secret_hash)
            if created is None:
                message = f"a client named '{new.name}' exists already"
                error = FieldError(location="body", field="name", message=message, type="conflict")
                raise Conflict(message, code="client_name_taken", errors=[error])
            details = {"name": new.name, "scopes": scopes, "expires_at": _iso(new.expires_at)}
            await repo.audit(created.client_id, AuditAction.CREATED, self.actor, details)
        return CreatedClient(**created.model_dump(), client_secret=secret)

    async def rotate_secret(self, client_id: str, grace_period_s: int | None) -> RotatedSecret:
        """Concurrency: rotations of one client hold its row in turn; each supersedes the one before (its secret
        then works only for the grace period), and at most two secrets work at any time."""
        grace = self.settings.secret_grace_period_s if grace_period_s is None else grace_period_s
        secret = new_client_secret()
        secret_hash = await self.hasher.hash(secret)
        async with self._unit_of_work() as (repo, _):
            current = await self._found(repo, client_id, for_update=True)
            if current.state is ClientState.REVOKED:
                raise Conflict(f"client '{client_id}' is revoked", code="client_revoked")
            rotated = await repo.rotate_secret(client_id, secret_hash, grace)
            await repo.audit(client_id, AuditAction.SECRET_ROTATED, self.actor, {"grace_period_s": grace})
        return RotatedSecret(**rotated.model_dump(), client_secret=secret)

    async def revoke(self, client_id: str) -> ApiClient:
        """Final, and idempotent: revoking a revoked client changes nothing and publishes nothing. Concurrency:
        revocations of one client hold its row in turn, so exactly one revokes it (one audit entry, one event),
        and the answer comes once the event is on the topic (or `publish_wait_s` passed)."""
        async with self._unit_of_work() as (repo, work):
            current = await self._found(repo, client_id, for_update=True)
            if current.state is ClientState.REVOKED:
                return current
            revoked = await repo.revoke(client_id, self.actor)
            await repo.audit(client_id, AuditAction.REVOKED, self.actor, {})
            assert revoked.revoked_at is not None
            self._publish_revocation(work, client_id, revoked.revoked_at)
        return revoked

    def _publish_revocation(self, work: UnitOfWork, client_id: str, revoked_at: datetime) -> None:
        event = ApiClientRevoked(partner_id=self.partner_id, client_id=client_id, revoked_at=revoked_at)
        envelope = Envelope.wrap(event, source=SOURCE, partner_id=self.partner_id)
        topic = self.settings.topic(Topic.CLIENT_REVOCATIONS)
        work.publish(envelope, topic, client_revocation_key(self.partner_id, client_id))

    async def _found(self, repo: ClientRepository, client_id: str, *, for_update: bool = False) -> ApiClient:
        client = await repo.get(client_id, for_update=for_update)
        if client is None:
            raise NotFound(f"no client '{client_id}'")
        return client


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


@dataclass(frozen=True)
class TokenIssuer:
    """POST /oauth/token: authenticate the client, grant the scopes, sign. Reads only, but for `last_used_at`,
    written at most once a minute per client."""

    pool: asyncpg.Pool
    hasher: SecretHasher
    keys: KeyRing
    settings: IdentitySettings

    async def issue(self, request: TokenRequest) -> IssuedToken:
        if request.client_id == FIRST_PARTY_CLIENT_ID:
            return self._first_party(request)
        async with self.pool.acquire() as conn:
            client = await Credentials(conn).client(request.client_id)
        if client is None or client.state is not ClientState.ACTIVE or not client.secret_hashes:
            raise invalid_client()
        if not await self.hasher.matches(request.client_secret, client.secret_hashes):
            raise invalid_client()
        try:
            scopes = requested_scopes(request.scope, client.scopes)
        except InvalidScope as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        claims = access_token_claims(
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            partner_id=client.partner_id,
            client_id=client.client_id,
            scopes=scopes,
            now=client.now,
            ttl=self.settings.token_ttl,
            client_expires_at=client.expires_at,
            jti=str(uuid.uuid4()),
        )
        token = self.keys.sign(claims)
        if client.last_used_at is None or client.now - client.last_used_at >= timedelta(minutes=1):
            async with self.pool.acquire() as conn:
                await Credentials(conn).mark_used(client.client_id)
        return IssuedToken(access_token=token, expires_in=claims["exp"] - claims["iat"], scope=claims["scope"])

    def _first_party(self, request: TokenRequest) -> IssuedToken:
        """The platform's own client: configured, so no database; any partner, any scope it asks for."""
        expected = self.settings.console_client_secret.get_secret_value()
        if not expected or not hmac.compare_digest(request.client_secret.encode(), expected.encode()):
            raise invalid_client()
        assert request.partner_id is not None  # domain.token_request requires it of this client
        try:
            scopes = requested_scopes(request.scope, [s.value for s in Scope])
        except InvalidScope as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        claims = access_token_claims(
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            partner_id=request.partner_id,
            client_id=FIRST_PARTY_CLIENT_ID,
            scopes=scopes,
            now=datetime.now(UTC),
            ttl=self.settings.token_ttl,
            client_expires_at=None,
            jti=str(uuid.uuid4()),
            actor=request.actor,
        )
        token = self.keys.sign(claims)
        return IssuedToken(access_token=token, expires_in=claims["exp"] - claims["iat"], scope=claims["scope"])


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
