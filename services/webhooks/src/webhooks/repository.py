"""The SQL of webhooks. Endpoints, their secrets and their delivery log are read and written per partner
(`EndpointRepository`); the consumers' fan-out and the dispatcher's claims span partners (`Deliveries`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from servicekit.db import DbConnection, as_columns, probe_per_key
from servicekit.retention import Purge, batch_delete, counted
from webhooks.domain import Endpoint

_ENDPOINT_COLUMNS = """
    e.id, e.url, e.event_types, e.status_type, e.description, e.enabled, e.disabled_reason, e.disabled_cause,
    e.disabled_at,
    e.failing_since, e.paused_until, e.created_at, e.updated_at, e.version,
    (SELECT max(s.expires_at) FROM endpoint_secrets s
      WHERE s.endpoint_id = e.id AND s.expires_at > now()) AS previous_secret_expires_at
"""

_PATCHABLE = frozenset(
    {"url", "event_types", "status_type", "description", "enabled", "disabled_reason", "disabled_cause", "disabled_at",
     "failing_since", "paused_until"}
)  # fmt: skip


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(**dict(row))


@dataclass(frozen=True)
class EndpointRepository:
    conn: DbConnection
    partner_id: str

    async def insert(self, endpoint_id: str, fields: dict[str, Any], secret: str) -> Endpoint:
        await self.conn.execute(
            "INSERT INTO endpoints (id, partner_id, url, event_types, status_type, description, enabled) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            endpoint_id,
            self.partner_id,
            fields["url"],
            [str(t) for t in fields["event_types"]],
            fields["status_type"],
            fields["description"],
            fields["enabled"],
        )
        await self.conn.execute(
            "INSERT INTO endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)", endpoint_id, secret
        )
        created = await self.get(endpoint_id)
        assert created is not None
        return created

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        lock = " FOR UPDATE OF e" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints e WHERE e.partner_id = $1 AND e.id = $2{lock}",
            self.partner_id,
            endpoint_id,
        )
        return _endpoint(row) if row else None

    async def page(self, *, after: tuple[datetime, str] | None, limit: int) -> list[Endpoint]:
        rows = await self.conn.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints e WHERE e.partner_id = $1 "
            "AND ($2::timestamptz IS NULL OR (e.created_at, e.id) > ($2, $3)) ORDER BY e.created_at, e.id LIMIT $4",
            self.partner_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [_endpoint(row) for row in rows]

    async def update(self, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        """Apply `changes` (column -> value) and bump the version."""
        assignments = ["version = version + 1", "updated_at = now()"]
        values: list[Any] = []
        for column, value in changes.items():
            assert column in _PATCHABLE, column
            values.append([str(t) for t in value] if column == "event_types" else value)
            assignments.append(f"{column} = ${len(values) + 2}")
        await self.conn.execute(
            f"UPDATE endpoints SET {', '.join(assignments)} WHERE partner_id = $1 AND id = $2",
            self.partner_id,
            endpoint_id,
            *values,
        )
        updated = await self.get(endpoint_id)
        assert updated is not None
        return updated

    async def delete(self, endpoint_id: str) -> bool:
        deleted = await self.conn.fetchval(
            "DELETE FROM endpoints WHERE partner_id = $1 AND id = $2 RETURNING id", self.partner_id, endpoint_id
        )
        return deleted is not None

    async def rotate_secret(self, endpoint_id: str, secret: str, grace_s: float) -> None:
        """The new secret signs from now on; the current one goes on signing for `grace_s`, any older one stops."""
        await self.conn.execute(
            "UPDATE endpoint_secrets SET expires_at = now() WHERE endpoint_id = $1 AND expires_at > now()",
            endpoint_id,
        )
        await self.conn.execute(
            "UPDATE endpoint_secrets SET expires_at = now() + make_interval(secs => $2) "
            "WHERE endpoint_id = $1 AND expires_at IS NULL",
            endpoint_id,
            grace_s,
        )
        await self.conn.execute(
            "INSERT INTO endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)", endpoint_id, secret
        )

    async def messages_page(
        self, endpoint_id: str, *, after: tuple[datetime, str] | None, limit: int, state: str | None
    ) -> list[asyncpg.Record]:
        """The delivery log, newest first, each message with its attempts (oldest first) as JSON."""
        return await self.conn.fetch(
            """
            SELECT m.id, m.event_id, m.event_type, m.order_id, m.sequence, m.payload, m.state, m.attempts,
                   m.next_attempt_at, m.created_at, m.finished_at,
                   coalesce((SELECT json_agg(json_build_object(
                                'attempted_at', a.attempted_at, 'response_status', a.response_status,
                                'latency_ms', a.latency_ms, 'response_excerpt', a.response_excerpt,
                                'error', a.error) ORDER BY a.id)
                             FROM attempts a WHERE a.message_id = m.id), '[]') AS attempt_log
              FROM messages m
             WHERE m.partner_id = $1 AND m.endpoint_id = $2 AND ($3::text IS NULL OR m.state = $3)
               AND ($4::timestamptz IS NULL OR (m.created_at, m.id) < ($4, $5))
             ORDER BY m.created_at DESC, m.id DESC
             LIMIT $6
            """,
            self.partner_id,
            endpoint_id,
            state,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )

    async def resend(self, endpoint_id: str, message_id: str, now: datetime) -> str:
        """Send a message again now, with its own id, the schedule started anew (a pending one is brought forward).
        `attempts` counts the attempts of the current round; the log keeps every one. Returns `resent`, `missing`,
        or `in_flight` (an attempt is under way: its outcome would overwrite the resend; left as it is)."""
        row = await self.conn.fetchrow(
            "SELECT lease_until FROM messages WHERE partner_id = $1 AND endpoint_id = $2 AND id = $3 FOR UPDATE",
            self.partner_id,
            endpoint_id,
            message_id,
        )
        if row is None:
            return "missing"
        if row["lease_until"] is not None and row["lease_until"] > now:
            return "in_flight"
        await self.conn.execute(
            "UPDATE messages SET state = 'pending', next_attempt_at = $2, finished_at = NULL, attempts = 0, "
            "lease_token = NULL, lease_until = NULL WHERE id = $1",
            message_id,
            now,
        )
        return "resent"

    async def resend_failed(self, endpoint_id: str, since: datetime, now: datetime) -> int:
        """Every message given up on that was created since `since`, sent again now."""
        count = await self.conn.fetchval(
            "WITH resent AS (UPDATE messages SET state = 'pending', next_attempt_at = $4, finished_at = NULL, "
            "attempts = 0 WHERE partner_id = $1 AND endpoint_id = $2 AND state = 'failed' AND created_at >= $3 "
            "RETURNING 1) "
            "SELECT count(*) FROM resent",
            self.partner_id,
            endpoint_id,
            since,
            now,
        )
        return int(count)


@dataclass(frozen=True)
class Subscriber:
    id: str
    partner_id: str
    event_types: list[str]
    status_type: str | None


@dataclass(frozen=True)
class NewMessage:
    id: str
    partner_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    order_id: str | None
    sequence: int | None
    payload: str
    next_attempt_at: datetime | None  # None: held behind a pending earlier change of its order


@dataclass(frozen=True)
class Claimed:
    """A message this instance holds the lease of, with what sending it needs."""

    id: str
    endpoint_id: str
    url: str
    payload: str
    attempts: int  # made before this one
    lease_token: uuid.UUID
    secrets: list[str]


@dataclass(frozen=True)
class AttemptRecord:
    attempted_at: datetime
    response_status: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


# `Deliveries.claim`: $1 now, $2 the lease's end, $3 the limit, $4 per endpoint, $5/$6 what is in flight per
# endpoint, $7 the lease token.
CLAIM_SQL = """
    WITH busy AS (SELECT * FROM unnest($5::text[], $6::int[]) AS b(endpoint_id, in_flight)),
    -- The endpoints that may be sent to now and how many more requests each may take from this instance: a healthy
    -- one its free slots; a failing one whose pause is over one, its probe; a paused one none, and its messages are
    -- never read (the filter is on the endpoint, before the lateral scan of its messages).
    open AS (
        SELECT e.id, e.failing_since IS NOT NULL AS probe, coalesce(busy.in_flight, 0) AS in_flight,
               CASE WHEN e.failing_since IS NULL THEN $4 ELSE 1 END - coalesce(busy.in_flight, 0) AS slots
          FROM endpoints e
          LEFT JOIN busy ON busy.endpoint_id = e.id
         WHERE e.enabled AND (e.paused_until IS NULL OR e.paused_until <= $1)
    ),
    due AS (
        SELECT o.id AS endpoint_id, o.probe, m.id
          FROM open o
         CROSS JOIN LATERAL (
            SELECT m.id, m.next_attempt_at FROM messages m
             WHERE m.endpoint_id = o.id AND m.state = 'pending' AND m.next_attempt_at <= $1
               AND (m.lease_until IS NULL OR m.lease_until <= $1)
               AND (m.order_id IS NULL OR NOT EXISTS (
                    SELECT 1 FROM messages earlier
                     WHERE earlier.endpoint_id = m.endpoint_id AND earlier.order_id = m.order_id
                       AND earlier.state = 'pending' AND earlier.sequence < m.sequence))
             ORDER BY m.next_attempt_at
             LIMIT greatest(o.slots, 0)
               FOR UPDATE OF m SKIP LOCKED
         ) m
         -- Round-robin across endpoints: each endpoint's first message, counting what this instance already
         -- sends to it, before anyone's next, so an old backlog never takes another endpoint's turn.
         ORDER BY o.in_flight + row_number() OVER (PARTITION BY o.id ORDER BY m.next_attempt_at), m.next_attempt_at
         LIMIT $3
    ),
    -- A probe pauses its endpoint until the probe's lease ends (its outcome sets the pause anew), so that no other
    -- round or instance probes meanwhile. Of two instances probing at once, the second's update waits for the
    -- first's, finds the pause set and updates nothing: its probe is not leased.
    probing AS (
        UPDATE endpoints e SET paused_until = $2
         WHERE e.id IN (SELECT endpoint_id FROM due WHERE probe)
           AND e.failing_since IS NOT NULL AND (e.paused_until IS NULL OR e.paused_until <= $1)
        RETURNING e.id
    ),
    leased AS (
        UPDATE messages SET lease_token = $7, lease_until = $2
          FROM due
         WHERE messages.id = due.id AND (NOT due.probe OR due.endpoint_id IN (SELECT id FROM probing))
        RETURNING messages.id, messages.endpoint_id, messages.payload, messages.attempts
    )
    SELECT l.id, l.endpoint_id, l.payload, l.attempts, e.url,
           array(SELECT s.secret FROM endpoint_secrets s
                  WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())
                  ORDER BY s.id DESC) AS secrets
      FROM leased l JOIN endpoints e ON e.id = l.endpoint_id
    """


# An index probe per (endpoint, order) in every plan (`probe_per_key` says why).
PENDING_SEQUENCES = (
    "SELECT m.endpoint_id, m.order_id, m.sequence FROM unnest($1::text[], $2::text[]) AS k(endpoint_id, order_id) "
    + probe_per_key(
        "SELECT endpoint_id, order_id, sequence FROM messages "
        "WHERE endpoint_id = k.endpoint_id AND order_id = k.order_id AND state = 'pending'",
        "m",
        "FOR SHARE",
    )
)


@dataclass(frozen=True)
class Deliveries:
    conn: DbConnection

    async def subscribers(self, partner_ids: Sequence[str]) -> list[Subscriber]:
        rows = await self.conn.fetch(
            "SELECT id, partner_id, event_types, status_type FROM endpoints WHERE partner_id = ANY($1) AND enabled",
            list(partner_ids),
        )
        return [Subscriber(r["id"], r["partner_id"], list(r["event_types"]), r["status_type"]) for r in rows]

    async def pending_sequences(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
        """The sequences of the pending messages of each (endpoint, order), locked FOR SHARE: a dispatcher finishing
        one of them waits for this transaction, and then sees (and releases) the messages it holds back."""
        if not keys:
            return {}
        rows = await self.conn.fetch(PENDING_SEQUENCES, *as_columns(keys, 2))
        pending: dict[tuple[str, str], list[int]] = {}
        for row in rows:
            pending.setdefault((row["endpoint_id"], row["order_id"]), []).append(row["sequence"])
        return pending

    async def insert_messages(self, messages: Sequence[NewMessage]) -> None:
        rows = [
            (m.id, m.partner_id, m.endpoint_id, m.event_id, m.event_type, m.order_id, m.sequence, m.payload,
             m.next_attempt_at)
            for m in messages
        ]  # fmt: skip
        await self.conn.execute(
            "INSERT INTO messages (id, partner_id, endpoint_id, event_id, event_type, order_id, sequence, payload, "
            "next_attempt_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
            "$7::bigint[], $8::text[], $9::timestamptz[]) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            *as_columns(rows, 9),
        )

    async def claim(
        self, now: datetime, lease_until: datetime, limit: int, per_endpoint: int, busy: dict[str, int]
    ) -> list[Claimed]:
        """Lease at most `limit` due messages, at most `per_endpoint` of an endpoint less what this instance already
        sends to it (`busy`), skipping those another instance is claiming or holds (an expired lease is free
        again). A status change waits while an earlier one of its order to the same endpoint is pending. The
        `limit` is shared fairly: endpoints take turns, the one with the fewest in flight first, the oldest due
        message of each first; so a backlog of old due messages on one endpoint (a dead one) never comes before
        another endpoint's fresh one. A failing endpoint gets nothing while it is paused and then one message, its
        probe, across all instances. One statement, its own transaction."""
        token = uuid.uuid4()
        rows = await self.conn.fetch(
            CLAIM_SQL,
            now,
            lease_until,
            limit,
            per_endpoint,
            list(busy),
            list(busy.values()),
            token,
        )
        return [
            Claimed(
                id=r["id"],
                endpoint_id=r["endpoint_id"],
                url=r["url"],
                payload=r["payload"],
                attempts=r["attempts"],
                lease_token=token,
                secrets=list(r["secrets"]),
            )
            for r in rows
        ]

    async def failing_since(self, endpoint_id: str) -> datetime | None:
        value: datetime | None = await self.conn.fetchval(
            # One attempt's outcome at a time per endpoint (the failure streak is read and written); NO KEY: the
            # consumers' inserts of messages, which only check the endpoint exists, go on meanwhile.
            "SELECT failing_since FROM endpoints WHERE id = $1 FOR NO KEY UPDATE",
            endpoint_id,
        )
        return value

    async def record_attempt(
        self,
        message: Claimed,
        attempt: AttemptRecord,
        *,
        state: str,
        next_attempt_at: datetime | None,
        now: datetime,
        failing_since: datetime | None,
        paused_until: datetime | None,
        disable_reason: str | None,
        disable_cause: str | None,
    ) -> bool:
        """The attempt, the message's new state and the endpoint's health (its failure streak, its pause, or its
        disabling), if this instance
        still holds the lease (False: it expired and another instance claimed the message; this attempt is then not
        recorded). One statement for the three; releasing the next change of the order is a statement of its own,
        after it: it must see what a fan-out that this statement waited for (`pending_sequences`) committed."""
        updated = await self.conn.fetchrow(
            """
            WITH done AS (
                UPDATE messages SET state = $3, attempts = attempts + 1,
                       next_attempt_at = coalesce($4, next_attempt_at), lease_token = NULL, lease_until = NULL,
                       finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE $5::timestamptz END
                 WHERE id = $1 AND lease_token = $2
                RETURNING id, endpoint_id, order_id
            ),
            attempt AS (
                INSERT INTO attempts (message_id, attempted_at, response_status, latency_ms, response_excerpt, error)
                SELECT id, $6, $7, $8, $9, $10 FROM done
            ),
            health AS (
                UPDATE endpoints SET failing_since = $11, paused_until = $13,
                       enabled = CASE WHEN $12::text IS NULL THEN enabled ELSE false END,
                       disabled_reason = coalesce($12, disabled_reason),
                       disabled_cause = coalesce($14, disabled_cause),
                       disabled_at = CASE WHEN $12::text IS NULL THEN disabled_at ELSE $5 END,
                       version = CASE WHEN $12::text IS NULL THEN version ELSE version + 1 END,
                       updated_at = CASE WHEN $12::text IS NULL THEN updated_at ELSE now() END
                 WHERE id = (SELECT endpoint_id FROM done)
                   -- a success writes only when it ends a streak or a pause
                   AND ($11::timestamptz IS NOT NULL OR $12::text IS NOT NULL OR failing_since IS NOT NULL
                        OR paused_until IS NOT NULL)
            )
            SELECT endpoint_id, order_id FROM done
            """,
            message.id,
            message.lease_token,
            state,
            next_attempt_at,
            now,
            attempt.attempted_at,
            attempt.response_status,
            attempt.latency_ms,
            attempt.response_excerpt,
            attempt.error,
            failing_since,
            disable_reason,
            paused_until,
            disable_cause,
        )
        if updated is None:
            return False
        if updated["order_id"] is not None and state != "pending":
            await self._release_next(updated, now)
        return True

    async def _release_next(self, message: asyncpg.Record, now: datetime) -> None:
        """The message is done (delivered or given up): the first change of its order it held back is due now,
        unless another earlier change is still pending (a resent one), whose end releases it instead."""
        await self.conn.execute(
            "UPDATE messages SET next_attempt_at = $3 WHERE id = ("
            "  SELECT h.id FROM messages h WHERE h.endpoint_id = $1 AND h.order_id = $2 AND h.state = 'pending' "
            "  AND h.next_attempt_at IS NULL ORDER BY h.sequence LIMIT 1) "
            "AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.endpoint_id = $1 AND e.order_id = $2 "
            "  AND e.state = 'pending' AND e.next_attempt_at IS NOT NULL AND e.sequence < messages.sequence)",
            message["endpoint_id"],
            message["order_id"],
            now,
        )


def attempt_log(raw: Any) -> list[dict[str, Any]]:
    """The attempts a delivery-log row carries (asyncpg hands json as text)."""
    value = json.loads(raw) if isinstance(raw, str) else raw
    return list(value)


# --- retention (servicekit.retention) -----------------------------------------------------------------------------
# A finished message (delivered or given up) goes with its attempts once old; a pending one is never deleted.

MESSAGES_SQL = counted(batch_delete("messages", "finished_at < $1"))


def retention_purges(messages: timedelta) -> list[Purge]:
    return [Purge("messages", messages, MESSAGES_SQL)]
