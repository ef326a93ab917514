"""Verifying the identity service's access tokens: the public keys from its JWKS, and the revoked clients from
its compacted topic. A service holds no signing key.

* `Jwks` fetches `{issuer}/.well-known/jwks.json` over HTTP and keeps it `max_age_s`; a token signed by a key it
  does not know makes it fetch again at once, at most every `min_refresh_interval_s` (so a flood of tokens with
  made-up `kid`s costs identity one request per interval). When identity cannot be reached, the keys held keep
  verifying. The issuer publishes a new key long before it signs with it (identity's `key_publish_ahead_s`, an
  hour by default, longer than `max_age_s`), so a rotation normally needs no refresh on an unknown `kid` at all.
* `RevokedClients` reads `identity.client-revocations.v1` from the beginning with no consumer group (every
  instance needs every revocation), like `servicekit.catalog.StatusCatalog`; a revocation reaches it within
  milliseconds of identity's answer (which waits for the broker's acknowledgement), and it follows its source or
  says it does not (`ready` cleared while its consumer restarts).
* `JwksVerifier.verify(token)` checks the signature (Ed25519 or ES256 only: never `none`, never HMAC), `typ`
  (`at+jwt`, RFC 9068), `iss`, `aud`, `exp` (with a small leeway), and that the client is not revoked; it
  returns the partner, the client and the scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jwt import JWTClaimsRegistry
from prometheus_client import Counter

from contracts.envelope import decode_any
from contracts.errors import ContractError
from contracts.identity import ApiClientRevoked
from servicekit.kafka import IDLE_CONSUMER, IDLE_POLL_MS, fetch_whole_assignment, topic_partitions

log = logging.getLogger(__name__)

ALGORITHMS = ("Ed25519", "ES256")  # EdDSA over Ed25519 by its RFC 9864 name, and ECDSA P-256
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
JWKS_PATH = "/.well-known/jwks.json"

JWKS_FETCHES = Counter("jwks_fetches_total", "Fetches of the issuer's JWKS, by outcome", ["outcome"])
REVOCATION_RESTARTS = Counter("revoked_clients_restarts_total", "Times the revocations' consumer failed and restarted")

PublicKey = OKPKey | ECKey


class InvalidToken(Exception):
    """The token is refused; the message says why (for the 401's detail)."""


@dataclass(frozen=True)
class TokenIdentity:
    partner_id: str
    client_id: str
    scopes: frozenset[str]
    actor: str | None = None  # `act.sub` (RFC 8693): the person the client acts for (the console's signed-in user)


class Jwks:
    """The issuer's public keys, by `kid`."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient | None = None,
        *,
        max_age_s: float = 300.0,
        min_refresh_interval_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._owns_client = client is None
        self._max_age_s = max_age_s
        self._min_interval_s = min_refresh_interval_s
        self._keys: dict[str, PublicKey] = {}
        self._tried_at = -float("inf")  # monotonic time of the last fetch, successful or not
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> PublicKey | None:
        """The key named `kid`: from the cache when it is fresh and knows it, else after one fetch, unless a
        fetch was tried less than `min_refresh_interval_s` ago."""
        if self._lock.locked():  # a fetch is under way: wait for its answer rather than decide without it
            async with self._lock:
                pass
        since_tried = time.monotonic() - self._tried_at
        # Kept `max_age_s` (and, while the issuer is away, tried again at that pace); an unknown kid may fetch
        # sooner, but not more often than every `min_refresh_interval_s`.
        if since_tried >= self._max_age_s or (kid not in self._keys and since_tried >= self._min_interval_s):
            await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the JWKS; concurrent callers share one fetch. A failure keeps the keys held."""
        tried_before = self._tried_at
        async with self._lock:
            if self._tried_at != tried_before:  # another caller fetched while this one waited
                return
            self._tried_at = time.monotonic()
            try:
                response = await self._client.get(self._url)
                response.raise_for_status()
                self._keys = _public_keys(response.json())
                JWKS_FETCHES.labels("ok").inc()
            except (httpx.HTTPError, ValueError, JoseError) as exc:
                JWKS_FETCHES.labels("failed").inc()
                log.warning(
                    "jwks: could not fetch %s (%s: %s); verifying with the keys held",
                    self._url,
                    type(exc).__name__,
                    exc,
                )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _public_keys(document: Any) -> dict[str, PublicKey]:
    """The JWKS's signing keys of the algorithms we accept; never a private part, never a symmetric key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, PublicKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in entry.items() if name != "d"}
        if public.get("kty") == "OKP" and public.get("crv") == "Ed25519":
            keys[entry["kid"]] = OKPKey.import_key(public)
        elif public.get("kty") == "EC" and public.get("crv") == "P-256":
            keys[entry["kid"]] = ECKey.import_key(public)
    return keys


class RevokedClients:
    """Every revoked API client, read from the compacted revocations topic (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        client_id: str = "revoked-clients",
        *,
        restart_delays_s: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._first_delay_s, self._last_delay_s = restart_delays_s
        self._revoked: set[tuple[str, str]] = set()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def is_revoked(self, partner_id: str, client_id: str) -> bool:
        return (partner_id, client_id) in self._revoked

    def apply_raw(self, value: bytes | None) -> None:
        if value is None:  # a tombstone: revocations are final and never deleted, so nothing to undo
            return
        try:
            envelope = decode_any(value, (ApiClientRevoked,))
        except ContractError as exc:
            log.warning("revoked clients: skipped an unreadable record: %s", exc)
            return
        assert isinstance(envelope.data, ApiClientRevoked)
        self._revoked.add((envelope.data.partner_id, envelope.data.client_id))

    async def start(self) -> None:
        """Start reading; raises if the broker cannot be reached now (later failures restart the consumer)."""
        consumer, ends = await self._connect()
        self._task = asyncio.create_task(self._run(consumer, ends), name="revoked-clients")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _connect(self) -> tuple[AIOKafkaConsumer, dict[TopicPartition, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **IDLE_CONSUMER,  # revocations are rare: every service follows them, and should cost nothing meanwhile
        )
        await consumer.start()
        fetch_whole_assignment(consumer)
        try:
            partitions = [TopicPartition(self._topic, p) for p in await topic_partitions(self._bootstrap, self._topic)]
            # The ends first: once assigned, the consumer's fetch waits on the broker (fetch_max_wait_ms) ahead of any
            # offsets request on the same connection, and every service start would wait for it.
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        return consumer, ends

    async def _run(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        delay = self._first_delay_s
        while True:
            try:
                await self._consume(consumer, ends)
            except Exception:
                log.exception("revoked clients: the consumer failed; restarting it")
            if self.ready.is_set():
                delay = self._first_delay_s
            self.ready.clear()
            REVOCATION_RESTARTS.inc()
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._last_delay_s)
                try:
                    consumer, ends = await self._connect()
                    break
                except Exception as exc:
                    log.warning("revoked clients: could not restart the consumer (%s: %s)", type(exc).__name__, exc)

    async def _consume(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        try:
            while True:
                if not self.ready.is_set() and await self._caught_up(consumer, ends):
                    self.ready.set()
                batches = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self.apply_raw(record.value)
        finally:
            await consumer.stop()

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if end and await consumer.position(tp) < end:
                return False
        return True


class KeySource(Protocol):
    """Where a verifier finds a token's public key: the issuer's JWKS over HTTP (`Jwks`), or the issuer's own ring."""

    async def key(self, kid: str) -> PublicKey | None: ...

    async def close(self) -> None: ...


class JwksVerifier:
    def __init__(
        self,
        jwks: KeySource,
        *,
        issuer: str,
        audience: str,
        revoked: RevokedClients | None = None,
        leeway_s: int = 30,
        algorithms: Sequence[str] = ALGORITHMS,
    ) -> None:
        self._jwks = jwks
        self._revoked = revoked
        self._algorithms = list(algorithms)
        self._claims = JWTClaimsRegistry(
            leeway=leeway_s,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            client_id={"essential": True},
        )

    def use_keys(self, keys: KeySource) -> None:
        """Verify with `keys` instead of the issuer's JWKS over HTTP: the issuer itself verifies with its own keys."""
        self._jwks = keys

    def follow(self, revoked: RevokedClients) -> None:
        """Refuse the tokens of the clients `revoked` holds from now on (the service's lifespan starts it)."""
        self._revoked = revoked

    async def close(self) -> None:
        await self._jwks.close()

    async def verify(self, token: str) -> TokenIdentity:
        header = _header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self._algorithms:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
        if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            raise InvalidToken("not an access token (typ must be at+jwt)")
        if not isinstance(kid, str):
            raise InvalidToken("the token names no key (kid)")
        key = await self._jwks.key(kid)
        if key is None:
            raise InvalidToken(f"unknown signing key {kid!r}")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm]).claims
            self._claims.validate(claims)
        except JoseError as exc:
            raise InvalidToken(exc.description or exc.error) from exc
        partner_id, client_id, scope = claims.get("sub"), claims.get("client_id"), claims.get("scope", "")
        if not (isinstance(partner_id, str) and isinstance(client_id, str) and isinstance(scope, str)):
            raise InvalidToken("sub, client_id and scope must be strings")
        if self._revoked is not None and self._revoked.is_revoked(partner_id, client_id):
            raise InvalidToken(f"client {client_id} is revoked")
        act = claims.get("act")
        actor = act.get("sub") if isinstance(act, dict) and isinstance(act.get("sub"), str) else None
        return TokenIdentity(partner_id=partner_id, client_id=client_id, scopes=frozenset(scope.split()), actor=actor)


def _header(token: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(token.encode("ascii")).headers())
    except (JoseError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidToken("not a signed JWT") from exc
