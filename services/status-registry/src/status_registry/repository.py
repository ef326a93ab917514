"""Status definitions in PostgreSQL. Every query is scoped by partner id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from contracts.campaign_events import CampaignStatusUsage
from contracts.statuses import StatusDefinition, StatusType
from servicekit.db import DbConnection
from status_registry.domain import NewStatus, StatusFields

COLUMNS = (
    "partner_id, code, type, name, localized_names, description, include_in_analytics, position, "
    "is_initial, allowed_next, archived, version, created_at, updated_at"
)


def _definition(row: asyncpg.Record | None) -> StatusDefinition:
    assert row is not None, "the row was locked or written in this transaction"
    values = dict(row)
    values["localized_names"] = json.loads(values["localized_names"])
    return StatusDefinition.model_validate(values)


TYPE_RANK = {StatusType.GENERAL: 1, StatusType.DELIVERY: 2, StatusType.PAYMENT: 3}


Position = tuple[int, int, str]
"""A status's keyset position in the listing order: (type rank, position, code)."""


def position_of(definition: StatusDefinition) -> Position:
    return TYPE_RANK[definition.type], definition.position, definition.code


# Advisory-lock class of a partner's catalog: (CATALOG_LOCK, hashtext(partner_id)). The two-key form never collides
# with the outbox relays' (servicekit.outbox.RELAY_LOCKS, slot).
CATALOG_LOCK = 7_101


class StatusRepository:
    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self._conn = conn
        self._partner_id = partner_id

    async def lock_catalog(self) -> None:
        """Hold the partner's catalog until this transaction ends: its rules span rows (a code exists once, one initial
        status per type, `allowed_next` names live codes of the type, a reorder names every status of its type), so
        two writes of one partner's catalog run one after the other, each reading what the previous one committed.
        Row locks alone let two creates of one code, or two syncs, race into a unique violation, and let reorders
        lock rows in different orders (the listing order they change) and deadlock."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", CATALOG_LOCK, self._partner_id)

    async def get(self, code: str, *, for_update: bool = False) -> StatusDefinition | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(
            f"SELECT {COLUMNS} FROM status_definitions WHERE partner_id = $1 AND code = $2{lock}",
            self._partner_id,
            code,
        )
        return _definition(row) if row else None

    async def all(self, *, for_update: bool = False) -> list[StatusDefinition]:
        lock = " FOR UPDATE" if for_update else ""
        rows = await self._conn.fetch(
            f"SELECT {COLUMNS} FROM status_definitions WHERE partner_id = $1 ORDER BY type_rank, position, code{lock}",
            self._partner_id,
        )
        return [_definition(r) for r in rows]

    async def types_by_code(self) -> dict[str, StatusType]:
        rows = await self._conn.fetch(
            "SELECT code, type FROM status_definitions WHERE partner_id = $1", self._partner_id
        )
        return {r["code"]: StatusType(r["type"]) for r in rows}

    async def initial_of(self, status_type: StatusType) -> str | None:
        code: str | None = await self._conn.fetchval(
            "SELECT code FROM status_definitions WHERE partner_id = $1 AND type = $2 AND is_initial AND NOT archived",
            self._partner_id,
            str(status_type),
        )
        return code

    async def active_campaigns_naming(self, code: str) -> list[dict[str, str]]:
        """`{"id", "name"}` of the partner's active campaigns that name `code`."""
        rows = await self._conn.fetch(
            "SELECT campaign_id, name FROM campaign_usage WHERE partner_id = $1 AND active AND codes @> ARRAY[$2] "
            "ORDER BY name",
            self._partner_id,
            code,
        )
        return [{"id": r["campaign_id"], "name": r["name"]} for r in rows]

    async def page(
        self, *, status_type: StatusType | None, include_archived: bool, after: Position | None, limit: int
    ) -> list[StatusDefinition]:
        rank, position, code = after or (0, -1, "")
        rows = await self._conn.fetch(
            f"SELECT {COLUMNS} FROM status_definitions WHERE partner_id = $1 "
            "AND ($2::text IS NULL OR type = $2) AND ($3 OR NOT archived) "
            "AND (type_rank, position, code) > ($4, $5, $6) "
            "ORDER BY type_rank, position, code LIMIT $7",
            self._partner_id,
            str(status_type) if status_type else None,
            include_archived,
            rank,
            position,
            code,
            limit,
        )
        return [_definition(r) for r in rows]

    async def insert(self, new: NewStatus) -> StatusDefinition:
        row = await self._conn.fetchrow(
            "INSERT INTO status_definitions (partner_id, code, type, name, localized_names, description, "
            "include_in_analytics, position, is_initial, allowed_next) "
            f"VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10) RETURNING {COLUMNS}",
            self._partner_id,
            new.code,
            str(new.type),
            *self._field_values(new),
        )
        return _definition(row)

    async def update(self, code: str, fields: StatusFields, *, archived: bool = False) -> StatusDefinition:
        row = await self._conn.fetchrow(
            "UPDATE status_definitions SET name = $3, localized_names = $4::jsonb, description = $5, "
            "include_in_analytics = $6, position = $7, is_initial = $8, allowed_next = $9, "
            "archived = $10, version = version + 1, updated_at = $11 "
            f"WHERE partner_id = $1 AND code = $2 RETURNING {COLUMNS}",
            self._partner_id,
            code,
            *self._field_values(fields),
            archived,
            datetime.now(UTC),
        )
        return _definition(row)

    async def set_archived(self, code: str, archived: bool) -> StatusDefinition:
        row = await self._conn.fetchrow(
            "UPDATE status_definitions SET archived = $3, version = version + 1, updated_at = $4 "
            f"WHERE partner_id = $1 AND code = $2 RETURNING {COLUMNS}",
            self._partner_id,
            code,
            archived,
            datetime.now(UTC),
        )
        return _definition(row)

    @staticmethod
    def _field_values(fields: StatusFields) -> tuple[object, ...]:
        return (
            fields.name,
            json.dumps(fields.localized_names, ensure_ascii=False),
            fields.description,
            fields.include_in_analytics,
            fields.position,
            fields.is_initial,
            fields.allowed_next,
        )


async def record_campaign_usage(conn: DbConnection, usages: Sequence[CampaignStatusUsage]) -> None:
    """Which codes each campaign names, across partners (the consumer's batch). Newer versions win; a redelivered or
    compacted-out-of-order record changes nothing."""
    await conn.executemany(
        "INSERT INTO campaign_usage (partner_id, campaign_id, name, active, codes, version) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner_id, campaign_id) DO UPDATE SET "
        "name = EXCLUDED.name, active = EXCLUDED.active, codes = EXCLUDED.codes, "
        "version = EXCLUDED.version "
        "WHERE campaign_usage.version < EXCLUDED.version",
        [(u.partner_id, u.campaign_id, u.name, u.active, u.codes, u.version) for u in usages],
    )
