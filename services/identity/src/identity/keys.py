"""The signing keys: created, encrypted at rest, rotated, chosen to sign, and published as a JWKS.

Every instance keeps the live keys in memory (`KeyRing`), reads them again every `key_refresh_s` and decides by
the clock which one signs: the schedule is in the database (`signs_from`, `signs_until`), so all instances
switch to a new key at the same moment without talking to each other. A rotation publishes the new key
`key_publish_ahead_s` before it signs and keeps the old one published until the last token it signed has
expired (`identity.domain.plan_rotation`).

`python -m identity.keys rotate [--publish-ahead SECONDS]` rotates by hand (0: sign with the new key at once,
e.g. when the current one may have leaked; its tokens still verify until they expire, unless revoked);
`python -m identity.keys list` shows the schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from joserfc import jwe, jwt
from joserfc.jwk import OctKey, OKPKey

from identity.domain import KeyTimes, due_for_rotation, pending_key, plan_rotation, published_at, signing_key_at
from identity.repository import KeyRepository, StoredKey
from identity.settings import IdentitySettings

log = logging.getLogger(__name__)

ALGORITHM = "Ed25519"  # EdDSA over Ed25519, by its fully specified name (RFC 9864; "EdDSA" is deprecated there)
_ENCRYPTION = {"alg": "dir", "enc": "A256GCM"}


@dataclass(frozen=True)
class KeyCipher:
    """Private keys at rest: a JWE under a key derived from the service's secret, so a copy of the database
    cannot sign."""

    key: OctKey

    @classmethod
    def from_secret(cls, secret: str) -> KeyCipher:
        derived = hashlib.sha256(b"identity.signing-keys:" + secret.encode()).digest()
        return cls(OctKey.import_key(derived))

    def seal(self, private_pem: bytes) -> str:
        return jwe.encrypt_compact(_ENCRYPTION, private_pem, self.key)

    def open(self, sealed: str) -> OKPKey:
        return OKPKey.import_key(jwe.decrypt_compact(sealed, self.key).plaintext or b"")


def new_key(cipher: KeyCipher, created_at: datetime, signs_from: datetime) -> StoredKey:
    private = OKPKey.generate_key("Ed25519", private=True)
    kid = private.thumbprint()  # RFC 7638: derived from the public key, so the same everywhere
    public = private.as_dict(private=False, kid=kid, use="sig", alg=ALGORITHM)
    return StoredKey(
        times=KeyTimes(kid=kid, created_at=created_at, signs_from=signs_from, signs_until=None, published_until=None),
        algorithm=ALGORITHM,
        public_jwk=public,
        private_key_encrypted=cipher.seal(private.as_pem(private=True)),
    )


async def ensure_signing_key(pool: asyncpg.Pool, cipher: KeyCipher) -> None:
    """The first start: a key that signs at once (no token was signed before, so nobody needs it ahead)."""
    async with pool.acquire() as conn, conn.transaction():
        keys = KeyRepository(conn)
        await keys.lock()
        now = await keys.now()
        if signing_key_at([k.times for k in await keys.live()], now) is None:
            created = new_key(cipher, now, now)
            await keys.insert(created)
            log.info("signing keys: created %s, signing from now", created.times.kid)


async def rotate_signing_key(
    pool: asyncpg.Pool, settings: IdentitySettings, *, publish_ahead: timedelta | None = None
) -> KeyTimes:
    """Publish a new key now that signs `publish_ahead` from now (default: the setting) and schedule the current
    key's end. A rotation already pending is returned as it is, so two instances rotating by age at once make
    one key; an explicit `publish_ahead` (e.g. 0 after a leak) always makes a new one."""
    cipher = KeyCipher.from_secret(settings.key_encryption_secret.get_secret_value())
    ahead = timedelta(seconds=settings.key_publish_ahead_s) if publish_ahead is None else publish_ahead
    async with pool.acquire() as conn, conn.transaction():
        keys = KeyRepository(conn)
        await keys.lock()
        now = await keys.now()
        live = [k.times for k in await keys.live()]
        pending = pending_key(live, now)
        if pending is not None and publish_ahead is None:
            return pending
        plan = plan_rotation(live, now, ahead, settings.key_outlives_signing)
        created = new_key(cipher, now, plan.signs_from)
        await keys.insert(created)
        if plan.retiring is not None and plan.retiring_published_until is not None:
            await keys.retire(plan.retiring, plan.signs_from, plan.retiring_published_until)
        if pending is not None:  # superseded before it ever signed
            await keys.retire(pending.kid, now, now + settings.key_outlives_signing)
        log.info("signing keys: %s published, signing from %s", created.times.kid, plan.signs_from.isoformat())
        return created.times


class KeyRing:
    """This instance's view of the live keys: which one signs now, and the JWKS."""

    def __init__(self, pool: asyncpg.Pool, settings: IdentitySettings) -> None:
        self._pool = pool
        self._settings = settings
        self._cipher = KeyCipher.from_secret(settings.key_encryption_secret.get_secret_value())
        self._keys: list[StoredKey] = []
        self._private: dict[str, OKPKey] = {}  # opened once per key, not per token

    async def refresh(self) -> None:
        async with self._pool.acquire() as conn:
            keys = await KeyRepository(conn).live()
        self._private = {
            k.times.kid: self._private.get(k.times.kid) or self._cipher.open(k.private_key_encrypted)
            for k in keys
            if k.times.signs_until is None or k.times.signs_until > datetime.now(UTC)
        }
        self._keys = keys

    def sign(self, claims: dict[str, Any]) -> str:
        """An RFC 9068 access token (`typ: at+jwt`) signed by the key whose time it is."""
        now = datetime.now(UTC)
        current = signing_key_at([k.times for k in self._keys], now)
        if current is None or current.kid not in self._private:
            raise RuntimeError("no signing key: the key ring has not been loaded")
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": current.kid}
        return jwt.encode(header, claims, self._private[current.kid], algorithms=[ALGORITHM])

    def jwks(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        published = {k.kid for k in published_at([k.times for k in self._keys], now)}
        return {"keys": [k.public_jwk for k in self._keys if k.times.kid in published]}

    async def key(self, kid: str) -> OKPKey | None:
        """A published key by its kid: identity verifies its own tokens (its /v1/clients routes) without asking its
        JWKS over HTTP (servicekit.jwks.KeySource)."""
        found = [entry for entry in self.jwks()["keys"] if entry.get("kid") == kid]
        return OKPKey.import_key(found[0]) if found else None

    async def close(self) -> None:
        pass

    def due_for_rotation(self) -> bool:
        rotate_after = self._settings.key_rotate_after_s
        limit = timedelta(seconds=rotate_after) if rotate_after > 0 else None
        return due_for_rotation([k.times for k in self._keys], datetime.now(UTC), limit)

    async def run(self) -> None:
        """Read the keys again every `key_refresh_s`, and rotate when the signing key is old enough."""
        while True:
            await asyncio.sleep(self._settings.key_refresh_s)
            try:
                if self.due_for_rotation():
                    await rotate_signing_key(self._pool, self._settings)
                await self.refresh()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("signing keys: could not read them again (%s); signing with what it holds", exc)


# --- the command line ----------------------------------------------------------------------------


async def _command(args: argparse.Namespace) -> None:
    settings = IdentitySettings()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        if args.command == "rotate":
            ahead = None if args.publish_ahead is None else timedelta(seconds=args.publish_ahead)
            created = await rotate_signing_key(pool, settings, publish_ahead=ahead)
            sys.stdout.write(f"{created.kid} published; signs from {created.signs_from.isoformat()}\n")
        async with pool.acquire() as conn:
            for key in await KeyRepository(conn).live():
                t = key.times
                sys.stdout.write(
                    f"{t.kid}  signs from {t.signs_from.isoformat()}"
                    f" until {t.signs_until.isoformat() if t.signs_until else '-'}"
                    f", published until {t.published_until.isoformat() if t.published_until else '-'}\n"
                )
    finally:
        with contextlib.suppress(Exception):
            await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m identity.keys", description="The identity service's signing keys")
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="publish a new signing key; it signs once published long enough")
    rotate.add_argument(
        "--publish-ahead",
        type=float,
        default=None,
        help="seconds between publishing and signing (default: KEY_PUBLISH_AHEAD_S); 0 after a leak",
    )
    commands.add_parser("list", help="the live keys and their schedule")
    asyncio.run(_command(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
