"""Campaigns, partner settings, evaluations and SMS outcomes in PostgreSQL. Every query is scoped by partner id,
except `active_campaigns` and `campaign_by_id`, which keep the in-memory index of all partners, and the evaluator's
batch queries, whose rows span partners: they go by campaign ids (unique across partners) or carry the partner id."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from campaigns.journeys import LeftReason, RunCount, RunState
from contracts.orders import OrderStatusChanged
from servicekit.db import DbConnection, as_columns, probe_per_key
from servicekit.retention import Purge, batch_delete, counted

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


async def campaign_by_id(conn: DbConnection, campaign_id: str) -> Campaign | None:
    """Whatever its partner: the index keeper reloads a campaign another instance announced by id."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM campaigns WHERE id = $1", campaign_id)
    return _campaign(row) if row is not None else None


@dataclass(frozen=True)
class Evaluation:
    campaign_id: str
    event_id: str
    partner_id: str
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
    outcomes: Counter[str] = field(default_factory=Counter)
    filtered_out_by_reason: Counter[str] = field(default_factory=Counter)
    failed_evaluations_by_reason: Counter[str] = field(default_factory=Counter)  # template, template_limit
    sms: Counter[str] = field(default_factory=Counter)
    failed_by_reason: Counter[str] = field(default_factory=Counter)

    def of_metric(self, metric: str) -> Counter[str]:
        """The counts a row of `campaign_stats_archive` adds to, by its metric."""
        return {
            "outcome": self.outcomes,
            "filtered_out_reason": self.filtered_out_by_reason,
            "sms": self.sms,
            "sms_failed_reason": self.failed_by_reason,
        }[metric]


class CampaignRepository:
    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self._conn = conn
        self._partner_id = partner_id

    @property
    def conn(self) -> DbConnection:
        """The transaction's connection, for writing outbox records beside the campaign."""
        return self._conn

    # --- campaigns -------------------------------------------------------------------------------
    async def get(self, campaign_id: str, *, for_update: bool = False) -> Campaign | None:
        """`for_update`: lock the row until commit, to change it."""
        lock = " FOR UPDATE" if for_update else ""
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
        return await self._keep_version(_campaign(row))

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
        return await self._keep_version(_campaign(row))

    async def _keep_version(self, campaign: Campaign) -> Campaign:
        """Keep the saved definition: the orders in a journey go on with the one they entered with."""
        await self._conn.execute(
            "INSERT INTO campaign_versions (campaign_id, version, definition, saved_at) VALUES ($1, $2, $3::jsonb, $4)",
            campaign.id,
            campaign.version,
            _definition_json(campaign.definition()),
            campaign.updated_at,
        )
        return campaign

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
    async def history(self, campaign_id: str, order_id: str, customer_id: str, since: datetime | None) -> History:
        """What earlier evaluations say about one event (a preview); the evaluator loads a whole batch's at once."""
        fired = await fired_for_orders(self._conn, [(campaign_id, order_id)])
        customer = (self._partner_id, customer_id)
        recent = await recent_marketing_sms(self._conn, {customer: since} if since else {})
        return History(fired_for_order=bool(fired), recent_marketing_sms=recent.get(customer, 0))

    async def existing(self, campaign_ids: Collection[str]) -> set[str]:
        """Those of `campaign_ids` that are this partner's campaigns."""
        rows = await self._conn.fetch(
            "SELECT id FROM campaigns WHERE partner_id = $1 AND id = ANY($2::text[])", self._partner_id, campaign_ids
        )
        return {row["id"] for row in rows}

    async def stats(self, campaign_ids: Collection[str], since: datetime | None = None) -> dict[str, CampaignStats]:
        """Each campaign's all-time counts, or those of evaluations and SMS outcomes since `since` (the retention
        archive holds only rows older than any window a page asks for, so a window leaves it out). Four statements
        for any number of campaigns (the campaigns list shows a day's counts of each)."""
        ids = list(campaign_ids)
        outcomes = await self._conn.fetch(
            "SELECT campaign_id, outcome, count(*) AS n FROM evaluations "
            "WHERE partner_id = $1 AND campaign_id = ANY($2::text[]) "
            "AND ($3::timestamptz IS NULL OR evaluated_at >= $3) GROUP BY 1, 2",
            self._partner_id,
            ids,
            since,
        )
        reasons = await self._conn.fetch(
            "SELECT campaign_id, outcome, reason->>'code' AS code, count(*) AS n "
            "FROM evaluations, jsonb_array_elements(reasons) AS reason "
            "WHERE partner_id = $1 AND campaign_id = ANY($2::text[]) AND outcome IN ('filtered_out', 'failed') "
            "AND ($3::timestamptz IS NULL OR evaluated_at >= $3) GROUP BY 1, 2, 3",
            self._partner_id,
            ids,
            since,
        )
        # A failure the notifier reported before a later dispatch is history: a replay of the dead-lettered
        # command sent the SMS after all (docs/notifier.md, "Replaying a dead letter").
        sms = await self._conn.fetch(
            "SELECT campaign_id, kind, coalesce(reason, '') AS reason, count(*) AS n FROM sms_outcomes o "
            "WHERE partner_id = $1 AND campaign_id = ANY($2::text[]) AND NOT (kind = 'failed' AND EXISTS ("
            "  SELECT 1 FROM sms_outcomes d WHERE d.send_sms_id = o.send_sms_id AND d.kind = 'dispatched' "
            "  AND d.occurred_at > o.occurred_at)) AND ($3::timestamptz IS NULL OR o.occurred_at >= $3) "
            "GROUP BY 1, 2, 3",
            self._partner_id,
            ids,
            since,
        )
        archived = await self._conn.fetch(
            "SELECT campaign_id, metric, key, n FROM campaign_stats_archive "
            "WHERE partner_id = $1 AND campaign_id = ANY($2::text[]) AND $3::timestamptz IS NULL",
            self._partner_id,
            ids,
            since,
        )
        stats = {campaign_id: CampaignStats() for campaign_id in ids}
        for row in outcomes:
            stats[row["campaign_id"]].outcomes[row["outcome"]] += row["n"]
        for row in reasons:
            one = stats[row["campaign_id"]]
            by_reason = (
                one.filtered_out_by_reason if row["outcome"] == "filtered_out" else one.failed_evaluations_by_reason
            )
            by_reason[row["code"]] += row["n"]
        for row in sms:
            one = stats[row["campaign_id"]]
            one.sms[row["kind"]] += row["n"]
            if row["kind"] == "failed":
                one.failed_by_reason[row["reason"] or "unknown"] += row["n"]
        for row in archived:  # what the retention clean-up deleted, counted before it went
            stats[row["campaign_id"]].of_metric(row["metric"])[row["key"]] += row["n"]
        return stats


# --- evaluating a batch of status changes (rows of several partners) --------------------------------


async def lock_customers(conn: DbConnection, customers: Collection[tuple[str, str]]) -> None:
    """Serialise evaluations per (partner id, customer id) until commit, so two orders of one customer cannot both
    slip under the frequency cap. One statement; the keys are locked in sorted order, so two transactions
    sharing customers never deadlock."""
    keys = [f"{partner_id}\n{customer_id}" for partner_id, customer_id in customers]
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
        "FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS sorted",
        keys,
    )


async def record_sms_outcomes(conn: DbConnection, outcomes: Collection[tuple[str, SmsOutcome]]) -> None:
    """Keep (partner id, outcome) pairs the notifier reported: one statement, so one round trip and atomic without
    a transaction of its own; one row per (command, kind), so a redelivered report counts once. The latest report
    of a kind wins: after a replay, a message may fail again for another reason (undeliverable after its dispatch)."""
    latest: dict[tuple[str, str], tuple[str, SmsOutcome]] = {}
    for partner_id, outcome in outcomes:  # a row may change once per statement: the batch's latest of each
        key = (outcome.send_sms_id, outcome.kind)
        if key not in latest or outcome.occurred_at > latest[key][1].occurred_at:
            latest[key] = (partner_id, outcome)
    await conn.execute(
        "INSERT INTO sms_outcomes (send_sms_id, kind, partner_id, campaign_id, reason, occurred_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) "
        "ON CONFLICT (send_sms_id, kind) DO UPDATE SET reason = EXCLUDED.reason, occurred_at = EXCLUDED.occurred_at "
        "WHERE EXCLUDED.occurred_at > sms_outcomes.occurred_at",
        *as_columns(
            [(o.send_sms_id, o.kind, p, o.campaign_id, o.reason, o.occurred_at) for p, o in latest.values()], 6
        ),
    )


async def settings_of_partners(conn: DbConnection, partner_ids: Collection[str]) -> dict[str, PartnerSettings]:
    """Each partner's settings (the defaults for a partner that saved none), in one statement."""
    rows = await conn.fetch(
        "SELECT partner_id, settings FROM partner_settings WHERE partner_id = ANY($1::text[])", list(partner_ids)
    )
    saved = {row["partner_id"]: PartnerSettings.model_validate_json(row["settings"]) for row in rows}
    return {partner_id: saved[partner_id] if partner_id in saved else PartnerSettings() for partner_id in partner_ids}


# A batch's lookups probe an index per key in every plan (`probe_per_key` says why).
EVALUATED_SQL = "SELECT e.campaign_id, e.event_id FROM unnest($1::text[], $2::text[]) AS k(c, e) " + probe_per_key(
    "SELECT campaign_id, event_id FROM evaluations WHERE campaign_id = k.c AND event_id = k.e", "e"
)
FIRED_FOR_ORDERS_SQL = (
    "SELECT DISTINCT k.c AS campaign_id, k.o AS order_id FROM unnest($1::text[], $2::text[]) AS k(c, o) "
    + probe_per_key("SELECT 1 FROM evaluations WHERE outcome = 'fired' AND campaign_id = k.c AND order_id = k.o", "f")
)


async def evaluated(conn: DbConnection, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (campaign id, event id) were decided already."""
    rows = await conn.fetch(EVALUATED_SQL, *as_columns(keys, 2))
    return {(r["campaign_id"], r["event_id"]) for r in rows}


async def campaigns_for_share(conn: DbConnection, campaign_ids: Collection[str]) -> dict[str, Campaign]:
    """The campaigns by id, held FOR SHARE until commit (no edit or pause commits meanwhile), locked in id order."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM campaigns WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE", sorted(campaign_ids)
    )
    return {row["id"]: _campaign(row) for row in rows}


async def fired_for_orders(conn: DbConnection, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (campaign id, order id) fired already."""
    rows = await conn.fetch(FIRED_FOR_ORDERS_SQL, *as_columns(keys, 2))
    return {(r["campaign_id"], r["order_id"]) for r in rows}


async def recent_marketing_sms(
    conn: DbConnection, since: Mapping[tuple[str, str], datetime]
) -> dict[tuple[str, str], int]:
    """Marketing SMS fired to each (partner id, customer id) after its window start; absent customers had none."""
    if not since:
        return {}
    rows = await conn.fetch(
        "SELECT w.partner_id, w.customer_id, count(*) AS n "
        "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS w (partner_id, customer_id, since) "
        "JOIN evaluations e ON e.partner_id = w.partner_id AND e.customer_id = w.customer_id "
        "WHERE e.outcome = 'fired' AND NOT e.transactional AND e.evaluated_at > w.since "
        "GROUP BY w.partner_id, w.customer_id",
        *as_columns([(*customer, start) for customer, start in since.items()], 3),
    )
    return {(r["partner_id"], r["customer_id"]): r["n"] for r in rows}


async def record_evaluations(conn: DbConnection, evaluations: Collection[Evaluation]) -> set[tuple[str, str]]:
    """Store decisions; returns the (campaign id, event id) stored, without those decided already (a concurrent
    redelivery)."""
    if not evaluations:
        return set()
    rows = [
        (
            e.campaign_id,
            e.event_id,
            e.partner_id,
            e.order_id,
            e.customer_id,
            str(e.outcome),
            json.dumps([r.model_dump() for r in e.reasons], ensure_ascii=False),
            e.send_sms_id,
            e.transactional,
            e.evaluated_at,
        )
        for e in evaluations
    ]
    inserted = await conn.fetch(
        "INSERT INTO evaluations (campaign_id, event_id, partner_id, order_id, customer_id, outcome, reasons, "
        "                         send_sms_id, transactional, evaluated_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
        "                     $7::text[]::jsonb[], $8::text[], $9::boolean[], $10::timestamptz[]) "
        "ON CONFLICT (campaign_id, event_id) DO NOTHING RETURNING campaign_id, event_id",
        *as_columns(rows, 10),
    )
    return {(r["campaign_id"], r["event_id"]) for r in inserted}


# --- retention (servicekit.retention) -----------------------------------------------------------------------------
# Deleted rows are counted into campaign_stats_archive in the same statement, so a campaign's stats stay whole.


def _rolled_up(delete: str, counts: str) -> str:
    """`delete` (returning the rows' columns as `gone`), its rows' `counts` added to the archive, the count."""
    return (
        f"WITH gone AS ({delete}), rolled AS ({counts}), archived AS ("
        "INSERT INTO campaign_stats_archive AS a (partner_id, campaign_id, metric, key, n) SELECT * FROM rolled "
        "ON CONFLICT (partner_id, campaign_id, metric, key) DO UPDATE SET n = a.n + excluded.n) "
        "SELECT count(*) FROM gone"
    )


def _evaluations_sql(condition: str) -> str:
    return _rolled_up(
        batch_delete("evaluations", condition, "partner_id, campaign_id, outcome, reasons"),
        "SELECT partner_id, campaign_id, 'outcome', outcome, count(*) FROM gone GROUP BY 1, 2, 4 UNION ALL "
        "SELECT partner_id, campaign_id, 'filtered_out_reason', coalesce(reason->>'code', ''), count(*) "
        "FROM gone, jsonb_array_elements(reasons) AS reason WHERE outcome = 'filtered_out' GROUP BY 1, 2, 4",
    )


UNFIRED_EVALUATIONS_SQL = _evaluations_sql("outcome <> 'fired' AND evaluated_at < $1")
FIRED_EVALUATIONS_SQL = _evaluations_sql("outcome = 'fired' AND evaluated_at < $1")
SMS_OUTCOMES_SQL = _rolled_up(
    batch_delete("sms_outcomes", "occurred_at < $1", "partner_id, campaign_id, kind, reason"),
    "SELECT partner_id, campaign_id, 'sms', kind, count(*) FROM gone GROUP BY 1, 2, 4 UNION ALL "
    "SELECT partner_id, campaign_id, 'sms_failed_reason', coalesce(nullif(reason, ''), 'unknown'), count(*) "
    "FROM gone WHERE kind = 'failed' GROUP BY 1, 2, 4",
)


FINISHED_RUNS_SQL = counted(batch_delete("journey_runs", "state IN ('done', 'left') AND updated_at < $1"))


def retention_purges(evaluations: timedelta, fired_evaluations: timedelta, sms_outcomes: timedelta) -> list[Purge]:
    """Evaluations that sent nothing and SMS outcomes: needed only against redeliveries, kept far longer than any.
    Fired evaluations: kept longer, as the frequency cap and "once per order" re-entry count them; finished journey
    runs as long, for a journey's "once per order" (a journey's figures then no longer count them)."""
    return [
        Purge("evaluations", evaluations, UNFIRED_EVALUATIONS_SQL),
        Purge("fired evaluations", fired_evaluations, FIRED_EVALUATIONS_SQL),
        Purge("sms_outcomes", sms_outcomes, SMS_OUTCOMES_SQL),
        Purge("finished journey runs", fired_evaluations, FINISHED_RUNS_SQL),
    ]


# --- the backtest's view of before (campaigns.backtest) --------------------------------------------------------


async def fired_orders_before(conn: DbConnection, campaign_id: str, before: datetime) -> set[str]:
    """The orders a campaign sent for before `before`: once per order holds across the backtest's period start."""
    rows = await conn.fetch(
        "SELECT DISTINCT order_id FROM evaluations WHERE campaign_id = $1 AND outcome = 'fired' AND evaluated_at < $2",
        campaign_id,
        before,
    )
    return {row["order_id"] for row in rows}


async def marketing_sms_times(
    conn: DbConnection, partner_id: str, besides: str | None, start: datetime, end: datetime
) -> dict[str, list[datetime]]:
    """Per customer, in order, when the partner's campaigns (but `besides`, whose SMS the backtest replays) fired
    marketing SMS in (start, end): what the frequency cap counted, as the live path counts it."""
    rows = await conn.fetch(
        "SELECT customer_id, array_agg(evaluated_at ORDER BY evaluated_at) AS times FROM evaluations "
        "WHERE partner_id = $1 AND outcome = 'fired' AND NOT transactional AND evaluated_at > $2 "
        "AND evaluated_at < $3 AND campaign_id IS DISTINCT FROM $4 GROUP BY customer_id",
        partner_id,
        start,
        end,
        besides,
    )
    return {row["customer_id"]: list(row["times"]) for row in rows}


# --- journeys: runs and their durable timers ------------------------------------------------------------------

_DEFINITIONS: dict[tuple[str, int], CampaignDefinition] = {}  # saved definitions never change: read once
_DEFINITIONS_KEPT = 1000  # at most this many in memory; then they are read again


def _saved_definition(campaign_id: str, version: int, raw: str) -> CampaignDefinition:
    key = (campaign_id, version)
    found = _DEFINITIONS.get(key)
    if found is None:
        if len(_DEFINITIONS) >= _DEFINITIONS_KEPT:
            _DEFINITIONS.clear()
        found = _DEFINITIONS[key] = CampaignDefinition.model_validate_json(raw)
    return found


@dataclass(frozen=True)
class Run:
    """A run as stored, with the definition it goes on with (that of the campaign version it entered at)."""

    campaign_id: str
    order_id: str
    run: int
    partner_id: str
    customer_id: str
    version: int
    step: int
    state: RunState
    due_at: datetime | None
    sequence: int
    change: OrderStatusChanged
    definition: CampaignDefinition


@dataclass(frozen=True)
class RunUpdate:
    campaign_id: str
    order_id: str
    run: int
    step: int
    state: RunState
    due_at: datetime | None
    sequence: int
    change: OrderStatusChanged
    left_reason: LeftReason | None


RUN_COLUMNS = (
    "r.campaign_id, r.order_id, r.run, r.partner_id, r.customer_id, r.version, r.step, r.state, r.due_at, "
    "r.sequence, r.change::text AS change, v.version AS definition_version, v.definition::text AS definition"
)
# The definition a run goes on with: the latest saved at or before the campaign version it entered at.
WITH_DEFINITION = (
    "journey_runs r CROSS JOIN LATERAL (SELECT version, definition FROM campaign_versions cv "
    "WHERE cv.campaign_id = r.campaign_id AND cv.version <= r.version ORDER BY cv.version DESC LIMIT 1) v"
)


# The live path's and the timers' statements (test_journeys_claims.py reads their plans over many waiting runs).
OPEN_RUNS_OF_ORDERS_SQL = (
    f"SELECT {RUN_COLUMNS} FROM {WITH_DEFINITION} "
    "WHERE (r.partner_id, r.order_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) "
    "AND r.state IN ('waiting', 'held') ORDER BY r.campaign_id, r.order_id, r.run FOR UPDATE OF r"
)
CLAIM_DUE_RUNS_SQL = (
    f"SELECT {RUN_COLUMNS} FROM {WITH_DEFINITION} WHERE r.state = 'waiting' AND r.due_at <= $1 "
    "ORDER BY r.due_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED"
)
EARLIEST_DUE_SQL = "SELECT min(due_at) FROM journey_runs WHERE state = 'waiting'"


def _run(row: asyncpg.Record) -> Run:
    return Run(
        campaign_id=row["campaign_id"],
        order_id=row["order_id"],
        run=row["run"],
        partner_id=row["partner_id"],
        customer_id=row["customer_id"],
        version=row["version"],
        step=row["step"],
        state=RunState(row["state"]),
        due_at=row["due_at"],
        sequence=row["sequence"],
        change=OrderStatusChanged.model_validate_json(row["change"]),
        definition=_saved_definition(row["campaign_id"], row["definition_version"], row["definition"]),
    )


async def runs_so_far(conn: DbConnection, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """How many runs each (campaign id, order id) had: re-entry and the next run's number."""
    rows = await conn.fetch(
        "SELECT campaign_id, order_id, max(run) AS n FROM journey_runs "
        "WHERE (campaign_id, order_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) GROUP BY 1, 2",
        *as_columns(keys, 2),
    )
    return {(r["campaign_id"], r["order_id"]): r["n"] for r in rows}


@dataclass(frozen=True)
class NewRun:
    """An order entering a journey: it starts at once (due now, before its first step)."""

    campaign_id: str
    order_id: str
    run: int
    partner_id: str
    customer_id: str
    version: int
    sequence: int
    change: OrderStatusChanged
    due_at: datetime


async def insert_runs(conn: DbConnection, runs: Collection[NewRun]) -> None:
    if not runs:
        return
    rows = [
        (r.campaign_id, r.order_id, r.run, r.partner_id, r.customer_id, r.version, r.due_at, r.sequence,
         r.change.model_dump_json())
        for r in runs
    ]  # fmt: skip
    await conn.execute(
        "INSERT INTO journey_runs (campaign_id, order_id, run, partner_id, customer_id, version, step, state, due_at, "
        "                          sequence, change, entered_at, updated_at) "
        "SELECT c, o, n, p, cu, v, -1, 'waiting', d, sq, ch::jsonb, d, d FROM unnest($1::text[], $2::text[], "
        "$3::int[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::int[], $9::text[]) "
        "AS u (c, o, n, p, cu, v, d, sq, ch) ON CONFLICT DO NOTHING",
        *as_columns(rows, 9),
    )


async def open_runs_of_orders(conn: DbConnection, orders: Collection[tuple[str, str]]) -> list[Run]:
    """The waiting and held runs of these (partner id, order id), locked until commit in a fixed order (so two
    transactions never deadlock over them); one index probe per order, whatever the number of runs elsewhere."""
    rows = await conn.fetch(OPEN_RUNS_OF_ORDERS_SQL, *as_columns(orders, 2))
    return [_run(row) for row in rows]


async def claim_due_runs(conn: DbConnection, now: datetime, limit: int) -> list[Run]:
    """Up to `limit` waiting runs due by `now`, earliest first, locked until commit; runs another instance holds
    are skipped (it fires them). The partial index on due_at makes this a walk of the due rows only."""
    rows = await conn.fetch(CLAIM_DUE_RUNS_SQL, now, limit)
    return [_run(row) for row in rows]


async def earliest_due(conn: DbConnection) -> datetime | None:
    """When the next waiting run comes due (one probe of the partial index)."""
    due: datetime | None = await conn.fetchval(EARLIEST_DUE_SQL)
    return due


async def active_campaigns_not_locked(conn: DbConnection, campaign_ids: Collection[str]) -> dict[str, Campaign]:
    """The active ones of these campaigns, held FOR SHARE until commit; one a state change holds is left out
    (never waited for: its runs fire next time, once the pause or archive committed)."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM campaigns WHERE id = ANY($1::text[]) AND state = 'active' "
        "ORDER BY id FOR SHARE SKIP LOCKED",
        sorted(campaign_ids),
    )
    return {row["id"]: _campaign(row) for row in rows}


async def try_lock_customers(conn: DbConnection, customers: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """`lock_customers` without waiting: those locked now (the consumer may hold the others: a timer never waits
    on it, so the two never deadlock; the runs of the others fire next time)."""
    keys = sorted(customers)
    rows = await conn.fetch(
        "SELECT p, c FROM unnest($1::text[], $2::text[]) AS k (p, c) "
        "WHERE pg_try_advisory_xact_lock(hashtextextended(p || E'\\n' || c, 0))",
        *as_columns(keys, 2),
    )
    return {(r["p"], r["c"]) for r in rows}


async def update_runs(conn: DbConnection, updates: Collection[RunUpdate], now: datetime) -> None:
    if not updates:
        return
    rows = [
        (u.campaign_id, u.order_id, u.run, u.step, str(u.state), u.due_at, u.sequence, u.change.model_dump_json(),
         str(u.left_reason) if u.left_reason else None)
        for u in updates
    ]  # fmt: skip
    await conn.execute(
        "UPDATE journey_runs r SET step = u.st, state = u.s, due_at = u.d, sequence = u.sq, change = u.ch::jsonb, "
        "left_reason = u.lr, updated_at = $10 FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], "
        "$6::timestamptz[], $7::int[], $8::text[], $9::text[]) AS u (c, o, n, st, s, d, sq, ch, lr) "
        "WHERE r.campaign_id = u.c AND r.order_id = u.o AND r.run = u.n",
        *as_columns(rows, 9),
        now,
    )


def _runs_in_order(states: str) -> str:
    """A FROM item locking campaign $1's runs in `states` in the consumer's order (campaign, order, run): a pause
    and a batch of status changes sharing runs wait for each other, never deadlock."""
    return (
        f"(SELECT order_id, run FROM journey_runs WHERE campaign_id = $1 AND state IN ({states}) "
        "ORDER BY order_id, run FOR UPDATE) AS l"
    )


_WAITING_IN_ORDER = _runs_in_order("'waiting'")
_HELD_IN_ORDER = _runs_in_order("'held'")
_OPEN_IN_ORDER = _runs_in_order("'waiting', 'held'")


_ITS_RUNS = "r.campaign_id = $1 AND r.order_id = l.order_id AND r.run = l.run"


async def hold_runs(conn: DbConnection, campaign_id: str, now: datetime) -> None:
    """Pausing: the waiting runs are held (the timers walk waiting ones only)."""
    await conn.execute(
        f"UPDATE journey_runs r SET state = 'held', updated_at = $2 FROM {_WAITING_IN_ORDER} WHERE {_ITS_RUNS}",
        campaign_id,
        now,
    )


async def resume_runs(conn: DbConnection, campaign_id: str, now: datetime, late_send_minutes: int) -> None:
    """Resuming: a held run waits again, or leaves ("paused_too_long") if its wait ended over late_send_minutes
    ago (journeys.resumed says the same for one run)."""
    await conn.execute(
        "UPDATE journey_runs r SET updated_at = $2, "
        "state = CASE WHEN $2 - r.due_at > make_interval(mins => $3) THEN 'left' ELSE 'waiting' END, "
        "left_reason = CASE WHEN $2 - r.due_at > make_interval(mins => $3) THEN 'paused_too_long' END "
        f"FROM {_HELD_IN_ORDER} WHERE {_ITS_RUNS}",
        campaign_id,
        now,
        late_send_minutes,
    )


async def archive_runs(conn: DbConnection, campaign_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE journey_runs r SET state = 'left', left_reason = 'archived', updated_at = $2 "
        f"FROM {_OPEN_IN_ORDER} WHERE {_ITS_RUNS}",
        campaign_id,
        now,
    )


async def run_counts(conn: DbConnection, campaign_id: str) -> tuple[list[int], list[RunCount]]:
    """The versions a campaign's definition was saved at, and its runs counted by where they are."""
    versions = await conn.fetch(
        "SELECT version FROM campaign_versions WHERE campaign_id = $1 ORDER BY version", campaign_id
    )
    rows = await conn.fetch(
        "SELECT version, step, state, left_reason, count(*) AS n FROM journey_runs WHERE campaign_id = $1 "
        "GROUP BY 1, 2, 3, 4",
        campaign_id,
    )
    counts = [RunCount(r["version"], r["step"], RunState(r["state"]), r["left_reason"], r["n"]) for r in rows]
    return [r["version"] for r in versions], counts
