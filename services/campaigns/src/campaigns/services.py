"""Use cases of the campaigns service: each runs in one transaction (with its outbox records, when it sends).

`Campaigns` is what a partner does over HTTP; `Evaluator` is what the consumer of
`orders.status-changed.v1` does with each event; `record_sms_events` keeps the notifier's reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from campaigns.domain import (
    Campaign,
    CampaignDefinition,
    CampaignIndex,
    CampaignState,
    Context,
    Decision,
    History,
    InvalidCampaign,
    Outcome,
    PartnerSettings,
    Policy,
    PreviewOrder,
    Problem,
    StateConflict,
    WaitUntil,
    cap_window_start,
    check_definition,
    check_transition,
    evaluate,
    preview_event,
    send_command,
    sms_command,
    triggered_by,
)
from campaigns.journeys import (
    Advance,
    JourneyFigures,
    LeftReason,
    RunState,
    StepSend,
    TimelineEntry,
    advance,
    all_hold,
    exits,
    journey_figures,
    timeline,
)
from campaigns.listener import NOTIFY_CHANNEL, Listening
from campaigns.repository import (
    CampaignRepository,
    CampaignStats,
    Evaluation,
    NewRun,
    Run,
    RunUpdate,
    SmsOutcome,
    active_campaigns,
    active_campaigns_not_locked,
    archive_runs,
    campaign_by_id,
    campaigns_for_share,
    claim_due_runs,
    earliest_due,
    evaluated,
    fired_for_orders,
    hold_runs,
    insert_runs,
    lock_customers,
    open_runs_of_orders,
    recent_marketing_sms,
    record_evaluations,
    record_sms_outcomes,
    resume_runs,
    run_counts,
    runs_so_far,
    settings_of_partners,
    try_lock_customers,
    update_runs,
)
from campaigns.settings import CampaignsSettings
from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import Envelope
from contracts.orders import OrderStatusChanged
from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed, send_sms_id
from contracts.statuses import StatusDefinition
from servicekit.catalog import StatusCatalog
from servicekit.consumer import TRANSIENT_ERRORS
from servicekit.db import DbConnection
from servicekit.errors import NotFound, PreconditionFailed
from servicekit.outbox import OutboxRecord, UnitOfWork, record_for, unit_of_work
from servicekit.tracing import consume_span

log = logging.getLogger(__name__)

SOURCE = "/services/campaigns"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class OffsetClock:
    """The real clock moved forward by the seconds a file holds (CAMPAIGNS_CLOCK_FILE: tests of a real subprocess
    move its time); the file is read again whenever its modification time changes, and a missing one is 0."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._mtime_ns: int | None = None
        self._offset = timedelta()

    def __call__(self) -> datetime:
        try:
            mtime_ns = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime_ns = None
        if mtime_ns != self._mtime_ns:
            self._mtime_ns = mtime_ns
            text = self._path.read_text().strip() if mtime_ns is not None else ""
            self._offset = timedelta(seconds=float(text or 0))
        return utc_now() + self._offset


__all__ = ["Campaigns", "Evaluator", "InvalidCampaign", "StateConflict"]


def policy_of(settings: CampaignsSettings) -> Policy:
    """The decisions' service-wide settings, from the service's."""
    return Policy(
        default_region=settings.default_phone_region,
        default_zone=settings.default_time_zone,
        sms_ttl=timedelta(hours=settings.sms_ttl_hours),
        send_sms_topic=settings.topic_send_sms,
    )


# --- campaigns over HTTP -------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaigns:
    """A partner's campaign use cases."""

    pool: asyncpg.Pool
    partner_id: str
    catalog: StatusCatalog
    index: CampaignIndex
    clock: Clock
    usage_topic: str  # the physical name of campaigns.status-usage.v1

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[tuple[CampaignRepository, UnitOfWork]]:
        async with unit_of_work(self.pool) as work:
            yield CampaignRepository(work.conn, self.partner_id), work

    async def _statuses(self) -> dict[str, StatusDefinition]:
        """The partner's statuses, once the replica has read everything the registry answered for until now:
        a status created (or archived) a moment ago is known here (see `StatusCatalog.sync`)."""
        await self.catalog.sync()
        return {d.code: d for d in self.catalog.of_partner(self.partner_id)}

    async def _changed(self, repo: CampaignRepository, work: UnitOfWork, campaign: Campaign) -> Campaign:
        # Delivered on commit: every instance (this one included) reloads the campaign into its index.
        await repo.announce(NOTIFY_CHANNEL, campaign.id)
        # The registry keeps which codes active campaigns name, to refuse archiving them.
        usage = CampaignStatusUsage(
            campaign_id=campaign.id,
            partner_id=campaign.partner_id,
            name=campaign.name,
            active=campaign.state == CampaignState.ACTIVE,
            codes=campaign.status_codes,
            version=campaign.version,
        )
        envelope = Envelope.wrap(usage, source=SOURCE, partner_id=campaign.partner_id)
        work.publish(envelope, self.usage_topic, envelope.key())
        return campaign

    async def create(self, definition: CampaignDefinition) -> Campaign:
        check_definition(definition, await self._statuses())
        async with self._transaction() as (repo, work):
            created = await self._changed(repo, work, await repo.insert(str(uuid.uuid4()), definition, self.clock()))
        self.index.put(created)
        return created

    async def get(self, campaign_id: str) -> Campaign:
        async with self.pool.acquire() as conn:
            found = await CampaignRepository(conn, self.partner_id).get(campaign_id)
        if found is None:
            raise NotFound(f"no campaign with id '{campaign_id}'")
        return found

    async def page(self, state: CampaignState | None, after: str | None, limit: int) -> list[Campaign]:
        async with self.pool.acquire() as conn:
            return await CampaignRepository(conn, self.partner_id).page(state=state, after=after, limit=limit)

    async def replace(self, campaign_id: str, definition: CampaignDefinition, if_match: int | None) -> Campaign:
        check_definition(definition, await self._statuses())
        async with self._transaction() as (repo, work):
            current = await self._current(repo, campaign_id, if_match)
            if current.state == CampaignState.ARCHIVED:
                raise StateConflict("an archived campaign cannot be edited")
            if current.definition() == definition:
                return current
            updated = await self._changed(repo, work, await repo.update(campaign_id, definition, self.clock()))
        self.index.put(updated)
        return updated

    async def set_state(self, campaign_id: str, state: CampaignState) -> Campaign:
        """Activate, pause or archive; asking for the current state again changes nothing."""
        # Caught up before the transaction, which holds the campaign's row.
        statuses = await self._statuses() if state == CampaignState.ACTIVE else {}
        async with self._transaction() as (repo, work):
            current = await self._current(repo, campaign_id, None)
            if not check_transition(current.state, state):
                return current
            if state == CampaignState.ACTIVE:
                # The catalog may have changed since the campaign was saved: never activate a dangling code.
                check_definition(current.definition(), statuses)
            now = self.clock()
            changed = await self._changed(repo, work, await repo.set_state(campaign_id, state, now))
            await self._runs_follow_state(repo.conn, changed, current.state, now)
        self.index.put(changed)
        return changed

    @staticmethod
    async def _runs_follow_state(conn: DbConnection, campaign: Campaign, before: CampaignState, now: datetime) -> None:
        """A journey's waiting orders: held by a pause, let go (or out, if paused too long) on resume, out when
        archived."""
        if campaign.state == CampaignState.PAUSED:
            await hold_runs(conn, campaign.id, now)
        elif campaign.state == CampaignState.ACTIVE and before == CampaignState.PAUSED:
            await resume_runs(conn, campaign.id, now, campaign.late_send_minutes)
        elif campaign.state == CampaignState.ARCHIVED:
            await archive_runs(conn, campaign.id, now)

    async def stats(self, campaign_id: str, since: datetime | None = None) -> CampaignStats:
        return (await self.stats_of([campaign_id], since))[campaign_id]

    async def stats_of(self, campaign_ids: Collection[str], since: datetime | None = None) -> dict[str, CampaignStats]:
        """Several campaigns' stats at once; NotFound naming those that are not this partner's."""
        # One snapshot: the retention clean-up moves rows into the archive counts between two of the reads otherwise.
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            repo = CampaignRepository(conn, self.partner_id)
            if missing := sorted(set(campaign_ids) - await repo.existing(campaign_ids)):
                raise NotFound(f"no campaign with id {', '.join(repr(m) for m in missing)}")
            return await repo.stats(campaign_ids, since)

    async def settings(self) -> PartnerSettings:
        async with self.pool.acquire() as conn:
            return await CampaignRepository(conn, self.partner_id).settings()

    async def save_settings(self, settings: PartnerSettings) -> PartnerSettings:
        async with self._transaction() as (repo, _):
            await repo.save_settings(settings, self.clock())
        return settings

    async def preview(
        self, campaign_id: str, event: OrderStatusChanged, policy: Policy
    ) -> tuple[Decision, list[TimelineEntry] | None]:
        """The decision the consumer would take now, from the stored history; writes nothing."""
        async with self.pool.acquire() as conn:
            repo = CampaignRepository(conn, self.partner_id)
            campaign = await repo.get(campaign_id)
            if campaign is None:
                raise NotFound(f"no campaign with id '{campaign_id}'")
            now = self.clock()
            partner = await repo.settings()
            history = await repo.history(
                campaign_id, event.order_id, event.order.customer.id, cap_window_start(now, partner)
            )
            if campaign.is_journey:  # its re-entry counts runs, not SMS
                entered = await runs_so_far(conn, [(campaign_id, event.order_id)])
                history = history._replace(fired_for_order=bool(entered))
        return _previewed(campaign, event, history, policy.context(now, partner))

    async def check_draft(self, definition: CampaignDefinition) -> None:
        """Refuse a request's unsaved definition as a create would, its problems under `definition`."""
        try:
            check_definition(definition, await self._statuses())
        except InvalidCampaign as invalid:  # the body's definition is one field of the request
            raise InvalidCampaign([replace(p, loc=("definition", *p.loc)) for p in invalid.problems]) from None

    async def preview_draft(
        self, definition: CampaignDefinition, event: OrderStatusChanged, policy: Policy
    ) -> tuple[Decision, list[TimelineEntry] | None]:
        """The decision an unsaved definition would take for this change (the campaign editor's live preview): as
        if it were active and had never sent anything; writes nothing."""
        await self.check_draft(definition)
        async with self.pool.acquire() as conn:
            partner = await CampaignRepository(conn, self.partner_id).settings()
        now = self.clock()
        return _previewed(definition, event, History(), policy.context(now, partner))

    async def journey(self, campaign_id: str) -> JourneyFigures:
        """A journey's figures per step (of the current definition) and the orders in it on each version."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            campaign = await CampaignRepository(conn, self.partner_id).get(campaign_id)
            if campaign is None:
                raise NotFound(f"no campaign with id '{campaign_id}'")
            versions, counts = await run_counts(conn, campaign_id)
        return journey_figures(campaign, versions, counts)

    def preview_event(self, order: PreviewOrder, from_code: str | None, to_code: str) -> OrderStatusChanged:
        """The event a change of `order` from `from_code` to `to_code` would carry; codes come from the catalog."""
        after = self._status(to_code, ("to",))
        before = self._status(from_code, ("from",)) if from_code else None
        if before is not None and before.type != after.type:
            raise InvalidCampaign([Problem(("from",), f"'{from_code}' is {before.type}, '{to_code}' is {after.type}")])
        others = {t: self._status(code, ("order", "statuses", str(t))) for t, code in order.statuses.items()}
        for status_type, definition in others.items():
            if definition.type != status_type:
                loc = ("order", "statuses", str(status_type))
                raise InvalidCampaign([Problem(loc, f"'{definition.code}' is a {definition.type} status")])
        return preview_event(order, before, after, others, self.clock())

    def _status(self, code: str, loc: tuple[str | int, ...]) -> StatusDefinition:
        found = self.catalog.get(self.partner_id, code)
        if found is None:
            raise InvalidCampaign([Problem(loc, f"unknown status code '{code}'")])
        return found

    @staticmethod
    async def _current(repo: CampaignRepository, campaign_id: str, if_match: int | None) -> Campaign:
        current = await repo.get(campaign_id, for_update=True)
        if current is None:
            raise NotFound(f"no campaign with id '{campaign_id}'")
        if if_match is not None and current.version != if_match:
            raise PreconditionFailed(
                f"the campaign is at version {current.version}, not {if_match}", code="version_mismatch"
            )
        return current


def _previewed(
    definition: CampaignDefinition, event: OrderStatusChanged, history: History, ctx: Context
) -> tuple[Decision, list[TimelineEntry] | None]:
    """The decision and, for a journey the order enters, its timeline."""
    decision = evaluate(definition, event, history, ctx)
    entered = decision.outcome == Outcome.ENTERED
    return decision, timeline(definition, event, history, ctx) if entered else None


# --- the in-memory index -------------------------------------------------------------------------


class IndexNotCurrent(TimeoutError):
    """The index may miss campaign writes (its listener is down or a reload failed): a transient error, so the
    consumer rewinds its batch and tries again after a pause instead of deciding on a stale index."""


class IndexKeeper:
    """Keeps a `CampaignIndex` current: loaded whole from the database, then reloaded campaign by campaign
    whenever any instance writes one (a NOTIFY on commit), so several instances agree.

    Should the listening connection be lost (notifications sent meanwhile are lost with it) or a reload fail,
    the index is no longer known to be current: `current` is cleared (the service is not ready, and the
    consumer waits), the keeper listens again with a growing pause between attempts and reloads everything,
    and only then is the index current again."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        index: CampaignIndex,
        *,
        check_interval_s: float = 5.0,
        retry_delays_s: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self._pool = pool
        self.index = index
        self._check_interval_s = check_interval_s
        self._first_delay_s, self._last_delay_s = retry_delays_s
        self._listening: Listening | None = None
        self._current = asyncio.Event()
        self._trouble = asyncio.Event()  # the listener was lost or a reload failed
        self._reloading = asyncio.Lock()  # one read-and-apply at a time, so an older read never lands last
        self._reloads: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> bool:
        return self._current.is_set()

    async def start(self) -> None:
        """Listen and load: raises if the database cannot be reached now (later, the keeper recovers by itself)."""
        await self._listen_and_load()
        log.info("campaign index: %d active campaigns", len(self.index))
        self._task = asyncio.create_task(self._follow(), name="campaign-index")

    async def wait_current(self, timeout_s: float) -> None:
        """Return once the index is current; raises `IndexNotCurrent` after `timeout_s`."""
        if self._current.is_set():
            return
        try:
            await asyncio.wait_for(self._current.wait(), timeout_s)
        except TimeoutError as exc:
            raise IndexNotCurrent("the campaign index is being reloaded") from exc

    async def _listen_and_load(self) -> None:
        if self._listening is not None:
            await self._listening.close()
            self._listening = None
        self._trouble.clear()
        # Listen first, then load: a write committed in between is reloaded, never missed.
        self._listening = await Listening.open(self._pool, self._on_notify, self._on_trouble)
        async with self._reloading, self._pool.acquire() as conn:
            self.index.replace_all(await active_campaigns(conn))
        if not self._trouble.is_set():  # a reload that failed meanwhile means another round
            self._current.set()

    async def _follow(self) -> None:
        while True:
            await self._wait_for_trouble()
            self._current.clear()
            log.warning("campaign index: no longer known to be current; listening again and reloading it whole")
            delay = self._first_delay_s
            while True:
                try:
                    await self._listen_and_load()
                    break
                except Exception as exc:  # a database away, or a bug: either way, not current until it works
                    log.warning("campaign index: could not reload (%s: %s); retrying in %.1fs", type(exc).__name__,
                                exc, delay, exc_info=not isinstance(exc, TRANSIENT_ERRORS))  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._last_delay_s)
            log.info("campaign index: current again, %d active campaigns", len(self.index))

    async def _wait_for_trouble(self) -> None:
        while not self._trouble.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trouble.wait(), self._check_interval_s)
            if not self._trouble.is_set() and self._listening is not None:
                await self._listening.probe(self._check_interval_s)

    def _on_trouble(self) -> None:
        self._current.clear()
        self._trouble.set()

    def _on_notify(self, campaign_id: str) -> None:
        task = asyncio.create_task(self._reload(campaign_id))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, campaign_id: str) -> None:
        try:
            async with self._reloading, self._pool.acquire() as conn:
                found = await campaign_by_id(conn, campaign_id)
                if found is not None:
                    self.index.put(found)
        except Exception as exc:
            # Never dropped: the whole index is reloaded, which covers this campaign.
            log.warning("campaign index: could not reload %s (%s: %s); reloading everything", campaign_id,
                        type(exc).__name__, exc, exc_info=not isinstance(exc, TRANSIENT_ERRORS))  # fmt: skip
            self._on_trouble()

    async def stop(self) -> None:
        tasks = [*self._reloads, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listening is not None:
            await self._listening.close()
            self._listening = None


# --- evaluating status changes -------------------------------------------------------------------


Change: TypeAlias = tuple[Envelope[OrderStatusChanged], Any, list[Campaign]]  # event, headers, triggered campaigns


@dataclass
class BatchHistory:
    """What earlier evaluations say, loaded once for a batch and kept current as the batch's own decisions are
    taken, so each event sees those before it: the decisions are those of evaluating the events one by one."""

    decided: set[tuple[str, str]]  # (campaign id, event id)
    fired: set[tuple[str, str]]  # (campaign id, order id): sent, or entered the journey
    recent: Counter[tuple[str, str]]  # marketing SMS per (partner id, customer id) within the partner's cap window
    runs: Counter[tuple[str, str]] = field(default_factory=Counter)  # a journey's runs so far per (campaign, order)

    def of(self, campaign: Campaign, event: OrderStatusChanged) -> History:
        return History(
            fired_for_order=(campaign.id, event.order_id) in self.fired,
            recent_marketing_sms=self.recent[(campaign.partner_id, event.order.customer.id)],
        )

    def add(self, evaluation: Evaluation) -> None:
        self.decided.add((evaluation.campaign_id, evaluation.event_id))
        if evaluation.outcome == Outcome.ENTERED:
            self.fired.add((evaluation.campaign_id, evaluation.order_id))
            self.runs[(evaluation.campaign_id, evaluation.order_id)] += 1
        if evaluation.outcome != Outcome.FIRED:
            return
        self.fired.add((evaluation.campaign_id, evaluation.order_id))
        if not evaluation.transactional:
            self.recent[(evaluation.partner_id, evaluation.customer_id)] += 1


@dataclass(frozen=True)
class Decided:
    evaluation: Evaluation
    sms: OutboxRecord | None  # the SendSms to enqueue, if the evaluation is the one stored
    run: NewRun | None = None  # the order entered a journey: its run, if the evaluation is the one stored


@dataclass(frozen=True)
class Evaluator:
    """Evaluates each status change against the partner's matching active campaigns, once per (campaign, event)."""

    pool: asyncpg.Pool
    keeper: IndexKeeper
    policy: Policy
    clock: Clock
    index_wait_s: float = 5.0
    wake_timers: Callable[[], None] = lambda: None  # a run came due now: the journey timers fire it at once

    @property
    def index(self) -> CampaignIndex:
        return self.keeper.index

    async def wait_for_current_index(self) -> None:
        """Never decide on an index that may miss a campaign write (a pause, an activation): wait until it is
        current, or raise `IndexNotCurrent`, a transient error, so the consumer retries the batch later."""
        await self.keeper.wait_current(self.index_wait_s)

    async def handle_batch(self, batch: Sequence[tuple[Envelope[OrderStatusChanged], Any]]) -> list[Evaluation]:
        """Evaluate a batch of changes in ONE transaction, with a few statements for the whole batch.

        `batch` pairs each envelope with its record headers (trace context). Customers are locked up front
        in a fixed order, so two instances sharing customers never deadlock.
        """
        changes = [(envelope, headers, found) for envelope, headers in batch if (found := self._triggered(envelope))]
        async with unit_of_work(self.pool) as work:
            recorded = await self._evaluate(work, changes) if changes else []
            due_now = await self._follow_runs(work.conn, [envelope for envelope, _ in batch])
        if due_now or any(d.run is not None for d in recorded):
            self.wake_timers()
        return [d.evaluation for d in recorded]

    async def _evaluate(self, work: UnitOfWork, changes: list[Change]) -> list[Decided]:
        conn = work.conn
        await lock_customers(conn, {(e.partnerid, e.data.order.customer.id) for e, _, _ in changes})
        # Decided (and sent) already: a redelivery or a replay.
        done = await evaluated(conn, {(c.id, e.id) for e, _, campaigns in changes for c in campaigns})
        pending = {c.id for e, _, campaigns in changes for c in campaigns if (c.id, e.id) not in done}
        if not pending:
            return []
        # The index found the candidates; the rows, held until commit, have the last word: a pause or an edit
        # committed on another instance a moment ago is respected, and none can commit while we send.
        current = await campaigns_for_share(conn, pending)
        contexts = await self._contexts(conn, {e.partnerid for e, _, _ in changes})
        history = await self._history(conn, changes, done, contexts, current)
        decided = self._decide_all(changes, current, history, contexts)
        stored = await record_evaluations(conn, [d.evaluation for d in decided])
        recorded = [d for d in decided if (d.evaluation.campaign_id, d.evaluation.event_id) in stored]
        work.add(d.sms for d in recorded if d.sms is not None)
        await insert_runs(conn, [d.run for d in recorded if d.run is not None])
        return recorded

    async def _follow_runs(self, conn: DbConnection, envelopes: list[Envelope[OrderStatusChanged]]) -> bool:
        """Journeys see every status change of an order in them: the run keeps the order as it is now, leaves at
        once when the exit conditions hold, and a "wait until" whose conditions now hold comes due now (the timers
        take it on). One indexed probe per batch; True when a run came due now."""
        runs = await open_runs_of_orders(conn, {(e.partnerid, e.data.order_id) for e in envelopes})
        if not runs:
            return False
        now = self.clock()
        latest: dict[tuple[str, str], OrderStatusChanged] = {}
        for envelope in envelopes:  # the batch's latest change of each order
            key = (envelope.partnerid, envelope.data.order_id)
            if key not in latest or envelope.data.sequence > latest[key].sequence:
                latest[key] = envelope.data
        updates = [u for run in runs if (u := self._followed(run, latest[(run.partner_id, run.order_id)], now))]
        await update_runs(conn, updates, now)
        return any(u.state == RunState.WAITING and u.due_at == now for u in updates)

    def _followed(self, run: Run, change: OrderStatusChanged, now: datetime) -> RunUpdate | None:
        if change.sequence <= run.sequence:
            return None  # seen already (a redelivery), or older than what the run holds
        definition, region = run.definition, self.policy.default_region
        state, due, reason = run.state, run.due_at, None
        if exits(definition, change.order, region):
            state, due, reason = RunState.LEFT, None, LeftReason.EXIT
        elif 0 <= run.step < len(definition.steps):
            waiting_at = definition.steps[run.step]
            if isinstance(waiting_at, WaitUntil) and all_hold(waiting_at.conditions, change.order, region):
                due = min(due, now) if due else now
        return RunUpdate(run.campaign_id, run.order_id, run.run, run.step, state, due, change.sequence, change, reason)

    def _triggered(self, envelope: Envelope[OrderStatusChanged]) -> list[Campaign]:
        event = envelope.data
        candidates = self.index.matching(envelope.partnerid, event.status_type, event.to_status.code)
        return sorted((c for c in candidates if triggered_by(c, event)), key=lambda c: c.id)

    async def _contexts(self, conn: DbConnection, partner_ids: set[str]) -> dict[str, Context]:
        now = self.clock()  # one "now" for the batch: its decisions are taken together
        settings = await settings_of_partners(conn, sorted(partner_ids))
        return {partner_id: self.policy.context(now, partner) for partner_id, partner in settings.items()}

    @staticmethod
    async def _history(
        conn: DbConnection,
        changes: list[Change],
        done: set[tuple[str, str]],
        contexts: dict[str, Context],
        current: dict[str, Campaign],
    ) -> BatchHistory:
        journeys = {c.id for c in current.values() if c.is_journey}
        orders = {(c.id, e.data.order_id) for e, _, campaigns in changes for c in campaigns if c.id not in journeys}
        entered = {(c.id, e.data.order_id) for e, _, campaigns in changes for c in campaigns if c.id in journeys}
        # Partners without a cap have nothing to count.
        window = {p: start for p, ctx in contexts.items() if (start := cap_window_start(ctx.now, ctx.partner))}
        since = {
            (e.partnerid, e.data.order.customer.id): window[e.partnerid] for e, _, _ in changes if e.partnerid in window
        }
        recent = await recent_marketing_sms(conn, since)
        fired = await fired_for_orders(conn, orders) if orders else set()
        runs = await runs_so_far(conn, entered) if entered else {}
        return BatchHistory(set(done), fired | set(runs), Counter(recent), Counter(runs))

    def _decide_all(
        self, changes: list[Change], current: dict[str, Campaign], history: BatchHistory, contexts: dict[str, Context]
    ) -> list[Decided]:
        """In offset order, so per-order order is kept and the cap counts the batch's earlier SMS."""
        decided: list[Decided] = []
        for envelope, headers, campaigns in changes:
            with consume_span("campaigns evaluate", headers, {"order_id": envelope.data.order_id}):
                for indexed in campaigns:
                    campaign = current.get(indexed.id)
                    if campaign is None or not self._reacts(campaign, envelope):
                        continue
                    if (campaign.id, envelope.id) in history.decided:
                        continue  # decided in an earlier batch, or the same event came twice in this one
                    decision = self._decide(campaign, envelope, history, contexts[envelope.partnerid])
                    history.add(decision.evaluation)
                    decided.append(decision)
        return decided

    @staticmethod
    def _reacts(campaign: Campaign, envelope: Envelope[OrderStatusChanged]) -> bool:
        return (
            campaign.partner_id == envelope.partnerid
            and campaign.reacts_to(envelope.time)
            and triggered_by(campaign, envelope.data)
        )

    def _decide(
        self, campaign: Campaign, envelope: Envelope[OrderStatusChanged], history: BatchHistory, ctx: Context
    ) -> Decided:
        event, now = envelope.data, ctx.now
        decision = evaluate(campaign, event, history.of(campaign, event), ctx)
        command = None
        sms = None
        run = None
        if decision.outcome == Outcome.ENTERED:
            number = history.runs[(campaign.id, event.order_id)] + 1
            run = NewRun(campaign.id, event.order_id, number, campaign.partner_id, event.order.customer.id,
                         campaign.version, event.sequence, event, now)  # fmt: skip
        if decision.outcome == Outcome.FIRED and decision.sms is not None:
            command = send_command(campaign, envelope.id, event, decision.sms, now, self.policy.sms_ttl)
            wrapped = Envelope.wrap_caused_by(
                envelope, command, source=SOURCE, event_id=command.idempotency_key, time=now
            )
            sms = record_for(wrapped, self.policy.send_sms_topic, wrapped.key())  # in the span: carries its trace
        evaluation = Evaluation(
            campaign_id=campaign.id,
            event_id=envelope.id,
            partner_id=campaign.partner_id,
            order_id=event.order_id,
            customer_id=event.order.customer.id,
            outcome=decision.outcome,
            reasons=decision.reasons,
            send_sms_id=command.idempotency_key if command else None,
            transactional=campaign.transactional,
            evaluated_at=now,
        )
        return Decided(evaluation, sms, run)


# --- journeys: the durable timers ------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    update: RunUpdate
    evaluations: list[Evaluation]
    sms: list[OutboxRecord]


class JourneyTimers:
    """Fires the journey runs that came due, on every instance: claims up to `batch` due runs (FOR UPDATE SKIP
    LOCKED, so two instances never take the same), takes each through its steps up to its next wait, and stores
    the runs, evaluations and SendSms in ONE transaction with the outbox. A run comes due only when the clock
    passes its due_at: never early. Between rounds it sleeps until the earliest due_at, at most `longest_sleep_s`
    (other instances' new runs), or until `wake` (this instance's consumer made a run due now)."""

    def __init__(self, policy: Policy, clock: Clock, *, batch: int = 200, longest_sleep_s: float = 5.0) -> None:
        self._pool: asyncpg.Pool | None = None
        self._policy = policy
        self._clock = clock
        self._batch = batch
        self._longest_sleep_s = longest_sleep_s
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # claims tried so far: what the loop costs at rest (test_journeys_events.py)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "started"
        return self._pool

    def wake(self) -> None:
        self._woken.set()

    def start(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._task = asyncio.create_task(self._loop(), name="journey-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                fired = await self.fire_due()
                if fired < self._batch:
                    await self._sleep()
            except Exception as exc:  # a database away, or a bug: the runs stay due; try again shortly
                log.warning("journey timers: %s: %s", type(exc).__name__, exc,
                            exc_info=not isinstance(exc, TRANSIENT_ERRORS))  # fmt: skip
                await asyncio.sleep(self._longest_sleep_s)

    async def _sleep(self) -> None:
        """Until the earliest due_at, a wake-up, or `longest_sleep_s`; then a claim only when a run is due (or may
        be: this instance's consumer woke it), since looking for the earliest is one read and a claim a transaction."""
        while True:
            self._woken.clear()
            async with self.pool.acquire() as conn:
                due = await earliest_due(conn)
            left = self._longest_sleep_s if due is None else (due - self._clock()).total_seconds()
            # A due run still here is held by a consumer's lock or a state change: look again a little later.
            wait = min(self._longest_sleep_s, max(left, 0.05))
            try:
                await asyncio.wait_for(self._woken.wait(), wait)
                return
            except TimeoutError:
                if due is not None and left <= wait:
                    return

    async def fire_due(self) -> int:
        """One round: the runs claimed (those fired, or skipped as locked elsewhere, come again next round)."""
        self.rounds += 1
        async with unit_of_work(self.pool) as work:
            conn, now = work.conn, self._clock()
            claimed = await claim_due_runs(conn, now, self._batch)
            if not claimed:
                return 0
            active = await active_campaigns_not_locked(conn, {r.campaign_id for r in claimed})
            customers = await try_lock_customers(conn, {(r.partner_id, r.customer_id) for r in claimed})
            runs = [r for r in claimed if r.campaign_id in active and (r.partner_id, r.customer_id) in customers]
            fired = await self._fire(conn, runs, now)
            await record_evaluations(conn, [e for f in fired for e in f.evaluations])
            await update_runs(conn, [f.update for f in fired], now)
            work.add(record for f in fired for record in f.sms)
        return len(claimed)

    async def _fire(self, conn: DbConnection, runs: list[Run], now: datetime) -> list[Fired]:
        """Caps, quiet hours and consent as of now (the Evaluator's rules: domain.plan_sms)."""
        partners = await settings_of_partners(conn, {r.partner_id for r in runs})
        contexts = {p: self._policy.context(now, settings) for p, settings in partners.items()}
        window = {p: start for p, ctx in contexts.items() if (start := cap_window_start(now, ctx.partner))}
        customers = {(r.partner_id, r.customer_id) for r in runs if r.partner_id in window}
        recent = Counter(await recent_marketing_sms(conn, {c: window[c[0]] for c in customers}))
        fired = []
        for run in runs:
            customer = (run.partner_id, run.customer_id)
            history = History(fired_for_order=True, recent_marketing_sms=recent[customer])
            went = advance(run.definition, run.step, run.change, history, contexts[run.partner_id])
            one = self._stored(run, went, now)
            recent[customer] += sum(1 for e in one.evaluations if e.outcome == Outcome.FIRED and not e.transactional)
            fired.append(one)
        return fired

    def _stored(self, run: Run, went: Advance, now: datetime) -> Fired:
        update = RunUpdate(run.campaign_id, run.order_id, run.run, went.step, went.state, went.due_at, run.sequence,
                           run.change, went.left_reason)  # fmt: skip
        evaluations, records = [], []
        for send in went.sends:
            evaluation, record = self._send(run, send, now)
            evaluations.append(evaluation)
            if record is not None:
                records.append(record)
        return Fired(update, evaluations, records)

    def _send(self, run: Run, send: StepSend, now: datetime) -> tuple[Evaluation, OutboxRecord | None]:
        """A send_sms step's evaluation and SendSms; the id is deterministic from (campaign, order, run, step), so a
        run fired again after a crash never sends twice (the notifier dedups by id)."""
        step_id = f"journey\n{run.order_id}\n{run.run}\n{send.step}"
        sms, record = send.decision.sms, None
        command_id = send_sms_id(run.campaign_id, step_id) if sms is not None else None
        if sms is not None and command_id is not None:
            command = sms_command(
                command_id, run.partner_id, run.campaign_id, run.change, sms, sender=send.template.sender,
                transactional=run.definition.transactional, now=now, ttl=self._policy.sms_ttl,
            )  # fmt: skip
            envelope = Envelope.wrap(command, source=SOURCE, partner_id=run.partner_id, event_id=command_id, time=now)
            record = record_for(envelope, self._policy.send_sms_topic, envelope.key())
        evaluation = Evaluation(
            campaign_id=run.campaign_id,
            event_id=step_id,
            partner_id=run.partner_id,
            order_id=run.order_id,
            customer_id=run.customer_id,
            outcome=send.decision.outcome,
            reasons=send.decision.reasons,
            send_sms_id=command_id,
            transactional=run.definition.transactional,
            evaluated_at=now,
        )
        return evaluation, record


# --- the notifier's reports ----------------------------------------------------------------------

SmsEvent = SmsDispatched | SmsFailed | SmsDelivered
KIND = {SmsDispatched: "dispatched", SmsFailed: "failed", SmsDelivered: "delivered"}


def sms_outcome(event: SmsEvent) -> SmsOutcome:
    return SmsOutcome(
        send_sms_id=event.send_sms_id,
        kind=KIND[type(event)],
        campaign_id=event.campaign_id,
        reason=event.reason if isinstance(event, SmsFailed) else None,
        occurred_at=event.occurred_at,
    )


async def record_sms_events(pool: asyncpg.Pool, events: Sequence[SmsEvent]) -> None:
    """Keep what the notifier reported; one row per (command, kind), so redelivery counts once. A marketer's test
    send is no campaign's SMS: its outcomes count nowhere."""
    counted = [(event.partner_id, sms_outcome(event)) for event in events if not event.is_test]
    async with pool.acquire() as conn:
        await record_sms_outcomes(conn, counted)
