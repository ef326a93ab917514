"""Campaigns, partner settings, evaluations and SMS outcomes in PostgreSQL. Every query is scoped by partner id,
except `active_campaigns`, which rebuilds the in-memory index of all partners at start."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from campaigns.domain import (
    Campaign,
    CampaignDefinition,
    CampaignState,
    History,
    Outcome,
    PartnerSettings,
    Reason,
)
from servicekit.db import DbConnection

COLUMNS = "partner_id, id, state, definition, version, activated_at, created_at, updated_at"


def _campaign(row: asyncpg.Record | None) -> Campaign:
    assert row is not None, "the row was locked or written in this transaction"
    values = dict(row)
    definition = json.loads(values.pop("definition"))
    return Campaign.model_validate({**definition, **values})


def _definition_json(definition: CampaignDefinition) -> str:
    return definition.model_dump_json(by_alias=True)


async def active_campaigns(conn: DbConnection) -> list[Campaign]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM campaigns WHERE state = 'active'")
    return [_campaign(r) for r in rows]


@dataclass(frozen=True)
class Evaluation:
    campaign_id: str
    event_id: str
    order_id: str
    customer_id: str
    outcome: Outcome
    reasons: list[Reason]
    send_sms_id: str | None
    transactional: bool
    evaluated_at: datetime


@dataclass(frozen=True)
class SmsOutcome:
    send_sms_id: str
    kind: str  # dispatched | delivered | failed
    campaign_id: str
    reason: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class CampaignStats:
    outcomes: Counter[str]
    filtered_out_by_reason: Counter[str]
    sms: Counter[str]
    failed_by_reason: Counter[str]


class CampaignRepository:
    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self._conn = conn
        self._partner_id = partner_id

    @property
    def conn(self) -> DbConnection:
        """The transaction's connection, for writing outbox records beside the campaign."""
        return self._conn

    # --- campaigns -------------------------------------------------------------------------------
    async def get(self, campaign_id: str, *, lock: str = "") -> Campaign | None:
        """`lock`: "" (none), "FOR UPDATE" (to change it) or "FOR SHARE" (to act on it while no one changes it)."""
        assert lock in ("", "FOR UPDATE", "FOR SHARE")
        lock = f" {lock}" if lock else ""
        row = await self._conn.fetchrow(
            f"SELECT {COLUMNS} FROM campaigns WHERE partner_id = $1 AND id = $2{lock}", self._partner_id, campaign_id
        )
        return _campaign(row) if row else None

    async def page(self, *, state: CampaignState | None, after: str | None, limit: int) -> list[Campaign]:
        """Oldest first; `after` is the id of the last campaign of the previous page."""
        rows = await self._conn.fetch(
            f"SELECT {COLUMNS} FROM campaigns WHERE partner_id = $1 AND ($2::text IS NULL OR state = $2) "
            "AND seq > coalesce((SELECT seq FROM campaigns WHERE partner_id = $1 AND id = $3), 0) "
            "ORDER BY seq LIMIT $4",
            self._partner_id,
            str(state) if state else None,
            after,
            limit,
        )
        return [_campaign(r) for r in rows]

    async def insert(self, campaign_id: str, definition: CampaignDefinition, now: datetime) -> Campaign:
        row = await self._conn.fetchrow(
            "INSERT INTO campaigns (partner_id, id, name, state, definition, created_at, updated_at) "
            f"VALUES ($1, $2, $3, 'draft', $4::jsonb, $5, $5) RETURNING {COLUMNS}",
            self._partner_id,
            campaign_id,
            definition.name,
            _definition_json(definition),
            now,
        )
        return _campaign(row)

    async def update(self, campaign_id: str, definition: CampaignDefinition, now: datetime) -> Campaign:
        row = await self._conn.fetchrow(
            "UPDATE campaigns SET name = $3, definition = $4::jsonb, version = version + 1, updated_at = $5 "
            f"WHERE partner_id = $1 AND id = $2 RETURNING {COLUMNS}",
            self._partner_id,
            campaign_id,
            definition.name,
            _definition_json(definition),
            now,
        )
        return _campaign(row)

    async def set_state(self, campaign_id: str, state: CampaignState, now: datetime) -> Campaign:
        row = await self._conn.fetchrow(
            "UPDATE campaigns SET state = $3, version = version + 1, updated_at = $4, "
            "activated_at = CASE WHEN $3 = 'active' THEN $4 ELSE activated_at END "
            f"WHERE partner_id = $1 AND id = $2 RETURNING {COLUMNS}",
            self._partner_id,
            campaign_id,
            str(state),
            now,
        )
        return _campaign(row)

    async def announce(self, channel: str, campaign_id: str) -> None:
        """Tell every instance, once this transaction commits, that the campaign changed."""
        await self._conn.execute("SELECT pg_notify($1, $2)", channel, campaign_id)

    # --- partner settings ------------------------------------------------------------------------
    async def settings(self) -> PartnerSettings:
        raw = await self._conn.fetchval("SELECT settings FROM partner_settings WHERE partner_id = $1", self._partner_id)
        return PartnerSettings.model_validate_json(raw) if raw else PartnerSettings()

    async def save_settings(self, settings: PartnerSettings, now: datetime) -> None:
        await self._conn.execute(
            "INSERT INTO partner_settings (partner_id, settings, updated_at) VALUES ($1, $2::jsonb, $3) "
            "ON CONFLICT (partner_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at",
            self._partner_id,
            settings.model_dump_json(),
            now,
        )

    # --- evaluations -----------------------------------------------------------------------------
    async def evaluated(self, campaign_id: str, event_id: str) -> bool:
        found = await self._conn.fetchval(
            "SELECT true FROM evaluations WHERE partner_id = $1 AND campaign_id = $2 AND event_id = $3",
            self._partner_id,
            campaign_id,
            event_id,
        )
        return bool(found)

    async def lock_customer(self, customer_id: str) -> None:
        """Serialise evaluations for one customer until commit, so two orders cannot both slip under the cap."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{self._partner_id}\n{customer_id}"
        )

    async def history(self, campaign_id: str, order_id: str, customer_id: str, since: datetime | None) -> History:
        row = await self._conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM evaluations WHERE campaign_id = $2 AND order_id = $3 "
            "                 AND outcome = 'fired' AND partner_id = $1) AS fired_for_order, "
            "       (SELECT count(*) FROM evaluations WHERE partner_id = $1 AND customer_id = $4 "
            "          AND outcome = 'fired' AND NOT transactional AND $5::timestamptz IS NOT NULL "
            "          AND evaluated_at > $5) AS recent",
            self._partner_id,
            campaign_id,
            order_id,
            customer_id,
            since,
        )
        assert row is not None
        return History(fired_for_order=row["fired_for_order"], recent_marketing_sms=row["recent"])

    async def record(self, evaluation: Evaluation) -> bool:
        """Store a decision; False when this (campaign, event) was decided already (a concurrent redelivery)."""
        inserted = await self._conn.fetchval(
            "INSERT INTO evaluations (campaign_id, event_id, partner_id, order_id, customer_id, outcome, reasons, "
            "send_sms_id, transactional, evaluated_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) "
            "ON CONFLICT (campaign_id, event_id) DO NOTHING RETURNING true",
            evaluation.campaign_id,
            evaluation.event_id,
            self._partner_id,
            evaluation.order_id,
            evaluation.customer_id,
            str(evaluation.outcome),
            json.dumps([r.model_dump() for r in evaluation.reasons], ensure_ascii=False),
            evaluation.send_sms_id,
            evaluation.transactional,
            evaluation.evaluated_at,
        )
        return bool(inserted)

    async def record_sms_outcomes(self, outcomes: list[SmsOutcome]) -> None:
        await self._conn.executemany(
            "INSERT INTO sms_outcomes (send_sms_id, kind, partner_id, campaign_id, reason, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(o.send_sms_id, o.kind, self._partner_id, o.campaign_id, o.reason, o.occurred_at) for o in outcomes],
        )

    async def stats(self, campaign_id: str) -> CampaignStats:
        outcomes = await self._conn.fetch(
            "SELECT outcome, count(*) AS n FROM evaluations WHERE partner_id = $1 AND campaign_id = $2 "
            "GROUP BY outcome",
            self._partner_id,
            campaign_id,
        )
        reasons = await self._conn.fetch(
            "SELECT reason->>'code' AS code, count(*) AS n FROM evaluations, jsonb_array_elements(reasons) AS reason "
            "WHERE partner_id = $1 AND campaign_id = $2 AND outcome = 'filtered_out' GROUP BY 1",
            self._partner_id,
            campaign_id,
        )
        sms = await self._conn.fetch(
            "SELECT kind, coalesce(reason, '') AS reason, count(*) AS n FROM sms_outcomes "
            "WHERE partner_id = $1 AND campaign_id = $2 GROUP BY kind, reason",
            self._partner_id,
            campaign_id,
        )
        sms_counts: Counter[str] = Counter()
        failed_by_reason: Counter[str] = Counter()
        for row in sms:
            sms_counts[row["kind"]] += row["n"]
            if row["kind"] == "failed":
                failed_by_reason[row["reason"] or "unknown"] += row["n"]
        return CampaignStats(
            outcomes=Counter({r["outcome"]: r["n"] for r in outcomes}),
            filtered_out_by_reason=Counter({r["code"]: r["n"] for r in reasons}),
            sms=sms_counts,
            failed_by_reason=failed_by_reason,
        )
