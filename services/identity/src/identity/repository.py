"""Identity's SQL. Clients, secrets and audit entries are read and written per partner (`ClientRepository`);
the token endpoint finds a client by its id alone (`Credentials`); the signing keys belong to no partner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from identity.domain import ApiClient, AuditAction, AuditEntry, ClientState, KeyTimes, client_state
from servicekit.db import DbConnection

_CLIENT_COLUMNS = """
    c.client_id, c.partner_id, c.name, c.scopes, c.expires_at, c.created_at, c.created_by, c.revoked_at,
    c.revoked_by, c.last_used_at, c.secret_rotated_at, c.version, now() AS now,
    (SELECT max(s.expires_at) FROM client_secrets s
      WHERE s.client_id = c.client_id AND s.expires_at > now()) AS previous_secret_expires_at
"""


def _client(row: asyncpg.Record) -> ApiClient:
    return ApiClient(
        client_id=row["client_id"],
        name=row["name"],
        scopes=sorted(row["scopes"]),
        state=client_state(row["revoked_at"], row["expires_at"], row["now"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        last_used_at=row["last_used_at"],
        secret_rotated_at=row["secret_rotated_at"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        version=row["version"],
    )


def client_position(client: ApiClient) -> tuple[datetime, str]:
    return client.created_at, client.client_id


@dataclass(frozen=True)
class ClientRepository:
    conn: DbConnection
    partner_id: str

    async def get(self, client_id: str, *, for_update: bool = False) -> ApiClient | None:
        lock = " FOR UPDATE OF c" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_CLIENT_COLUMNS} FROM api_clients c WHERE c.partner_id = $1 AND c.client_id = $2{lock}",
            self.partner_id,
            client_id,
        )
        return _client(row) if row else None

    async def page(self, *, after: tuple[datetime, str] | None, limit: int, include_revoked: bool) -> list[ApiClient]:
        rows = await self.conn.fetch(
            f"SELECT {_CLIENT_COLUMNS} FROM api_clients c WHERE c.partner_id = $1"
            " AND ($2::timestamptz IS NULL OR (c.created_at, c.client_id) > ($2, $3))"
            " AND ($4 OR c.revoked_at IS NULL)"
            " ORDER BY c.created_at, c.client_id LIMIT $5",
            self.partner_id,
            after[0] if after else None,
            after[1] if after else "",
            include_revoked,
            limit,
        )
        return [_client(row) for row in rows]

    async def insert(
        self, client_id: str, name: str, scopes: list[str], expires_at: datetime | None, actor: str, secret_hash: str
    ) -> ApiClient | None:
        """The new client with its first secret; None when a live client of the partner has that name already
        (also when a concurrent create of the same name committed first: the partial unique index decides)."""
        inserted = await self.conn.fetchval(
            "INSERT INTO api_clients (client_id, partner_id, name, scopes, expires_at, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (partner_id, lower(name)) WHERE revoked_at IS NULL DO NOTHING RETURNING client_id",
            client_id,
            self.partner_id,
            name,
            scopes,
            expires_at,
            actor,
        )
        if inserted is None:
            return None
        await self.conn.execute(
            "INSERT INTO client_secrets (client_id, secret_hash) VALUES ($1, $2)", client_id, secret_hash
        )
        return await self.get(client_id)

    async def rotate_secret(self, client_id: str, secret_hash: str, grace_period_s: int) -> ApiClient:
        """The new secret becomes the current one; the current one works `grace_period_s` longer; any older one
        (still in the grace of an earlier rotation) stops now: at most two secrets work at once."""
        await self.conn.execute(
            "UPDATE client_secrets SET expires_at = CASE WHEN expires_at IS NULL"
            " THEN now() + make_interval(secs => $2) ELSE least(expires_at, now()) END"
            " WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > now())",
            client_id,
            grace_period_s,
        )
        await self.conn.execute(
            "INSERT INTO client_secrets (client_id, secret_hash) VALUES ($1, $2)", client_id, secret_hash
        )
        await self.conn.execute(
            "UPDATE api_clients SET secret_rotated_at = now(), version = version + 1 WHERE client_id = $1", client_id
        )
        return await self._required(client_id)

    async def revoke(self, client_id: str, actor: str) -> ApiClient:
        """Revoked, and every secret with it."""
        await self.conn.execute(
            "UPDATE api_clients SET revoked_at = now(), revoked_by = $2, version = version + 1 WHERE client_id = $1",
            client_id,
            actor,
        )
        await self.conn.execute(
            "UPDATE client_secrets SET expires_at = now() WHERE client_id = $1"
            " AND (expires_at IS NULL OR expires_at > now())",
            client_id,
        )
        return await self._required(client_id)

    async def _required(self, client_id: str) -> ApiClient:
        client = await self.get(client_id)
        assert client is not None, "read back in the transaction that changed it"
        return client

    async def audit(self, client_id: str, action: AuditAction, actor: str, details: dict[str, Any]) -> None:
        await self.conn.execute(
            "INSERT INTO client_audit (partner_id, client_id, action, actor, details) VALUES ($1, $2, $3, $4, $5)",
            self.partner_id,
            client_id,
            action.value,
            actor,
            json.dumps(details),
        )

    async def audit_page(self, client_id: str, *, after: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.conn.fetch(
            "SELECT id, client_id, action, actor, at, details FROM client_audit"
            " WHERE partner_id = $1 AND client_id = $2 AND id > $3 ORDER BY id LIMIT $4",
            self.partner_id,
            client_id,
            after or 0,
            limit,
        )
        return [
            AuditEntry(
                id=r["id"],
                client_id=r["client_id"],
                action=AuditAction(r["action"]),
                actor=r["actor"],
                at=r["at"],
                details=json.loads(r["details"]),
            )
            for r in rows
        ]


@dataclass(frozen=True)
class ClientForToken:
    """What the token endpoint needs of a client: whether it may have a token, and the hashes to try."""

    client_id: str
    partner_id: str
    scopes: list[str]
    state: ClientState
    expires_at: datetime | None
    last_used_at: datetime | None
    secret_hashes: list[str]  # the secrets that work now, newest first
    now: datetime


@dataclass(frozen=True)
class Credentials:
    conn: DbConnection

    async def client(self, client_id: str) -> ClientForToken | None:
        """One round trip: the client and the hashes of its working secrets."""
        row = await self.conn.fetchrow(
            "SELECT c.client_id, c.partner_id, c.scopes, c.expires_at, c.revoked_at, c.last_used_at, now() AS now,"
            " ARRAY(SELECT s.secret_hash FROM client_secrets s WHERE s.client_id = c.client_id"
            "   AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.id DESC) AS hashes"
            " FROM api_clients c WHERE c.client_id = $1",
            client_id,
        )
        if row is None:
            return None
        return ClientForToken(
            client_id=row["client_id"],
            partner_id=row["partner_id"],
            scopes=list(row["scopes"]),
            state=client_state(row["revoked_at"], row["expires_at"], row["now"]),
            expires_at=row["expires_at"],
            last_used_at=row["last_used_at"],
            secret_hashes=list(row["hashes"]),
            now=row["now"],
        )

    async def mark_used(self, client_id: str) -> None:
        """At most one write a minute per client, whatever the rate of its token requests: the caller only asks
        when the time it read is a minute old, and the condition keeps concurrent callers to one update."""
        await self.conn.execute(
            "UPDATE api_clients SET last_used_at = now() WHERE client_id = $1"
            " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            client_id,
        )


@dataclass(frozen=True)
class StoredKey:
    times: KeyTimes
    algorithm: str
    public_jwk: dict[str, Any]
    private_key_encrypted: str


def _stored_key(row: asyncpg.Record) -> StoredKey:
    return StoredKey(
        times=KeyTimes(
            kid=row["kid"],
            created_at=row["created_at"],
            signs_from=row["signs_from"],
            signs_until=row["signs_until"],
            published_until=row["published_until"],
        ),
        algorithm=row["algorithm"],
        public_jwk=json.loads(row["public_jwk"]),
        private_key_encrypted=row["private_key_encrypted"],
    )


@dataclass(frozen=True)
class KeyRepository:
    conn: DbConnection

    async def lock(self) -> None:
        """Rotations one at a time, across instances (readers are not blocked)."""
        await self.conn.execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")

    async def now(self) -> datetime:
        moment: datetime = await self.conn.fetchval("SELECT now()")
        return moment

    async def live(self) -> list[StoredKey]:
        """Every key still published or still to sign; retired ones stay in the table for the record."""
        rows = await self.conn.fetch(
            "SELECT * FROM signing_keys WHERE published_until IS NULL OR published_until > now() ORDER BY signs_from"
        )
        return [_stored_key(row) for row in rows]

    async def insert(self, key: StoredKey) -> None:
        await self.conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key_encrypted, created_at, signs_from)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key.times.kid,
            key.algorithm,
            json.dumps(key.public_jwk),
            key.private_key_encrypted,
            key.times.created_at,
            key.times.signs_from,
        )

    async def retire(self, kid: str, signs_until: datetime, published_until: datetime) -> None:
        await self.conn.execute(
            "UPDATE signing_keys SET signs_until = $2, published_until = $3 WHERE kid = $1",
            kid,
            signs_until,
            published_until,
        )
