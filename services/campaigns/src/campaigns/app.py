"""Wiring of the campaigns service: database, outbox relay, status catalog, campaign index, consumers, HTTP API.
No logic lives here."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from campaigns.api import router
from campaigns.backtest_api import router as backtest_router
from campaigns.backtest_worker import ReplayWorker
from campaigns.consumers import subscribe
from campaigns.domain import CampaignIndex
from campaigns.repository import retention_purges
from campaigns.services import Clock, Evaluator, IndexKeeper, JourneyTimers, OffsetClock, policy_of, utc_now
from campaigns.settings import CampaignsSettings
from contracts.campaign_events import CampaignStatusUsage
from contracts.sms import SendSms
from contracts.topics import Topic
from servicekit.app import Publishes, Runtime, ServiceSpec, create_service_app, parts_of, serve

PUBLISHES = (
    Publishes(
        Topic.SEND_SMS,
        "One SendSms per campaign and triggering change, or per journey run and send_sms step (deterministic ids)",
        (SendSms,),
    ),
    Publishes(
        Topic.CAMPAIGN_STATUS_USAGE,
        "The status codes each campaign names and whether it is active (compacted; key {partner}:{campaign_id})",
        (CampaignStatusUsage,),
    ),
    Publishes(Topic.ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ, "orders.status-changed.v1 records it could not read"),
    Publishes(Topic.SMS_EVENTS_CAMPAIGNS_DLQ, "notifier.sms-events.v1 records it could not read"),
)


def _on_startup(settings: CampaignsSettings, clock: Clock, worker: ReplayWorker, timers: JourneyTimers) -> ServiceSpec:
    async def start(runtime: Runtime) -> None:
        keeper = IndexKeeper(runtime.pool, CampaignIndex())
        await keeper.start()  # before the consumers: no event is evaluated against an empty index
        runtime.parts = keeper
        evaluator = Evaluator(runtime.pool, keeper, policy_of(settings), clock, wake_timers=timers.wake)
        subscribe(runtime.broker, settings, evaluator, runtime.producer)
        timers.start(runtime.pool)

    async def index_current(runtime: Runtime) -> bool:
        return parts_of(runtime, IndexKeeper).current

    async def stop(runtime: Runtime) -> None:
        # The index keeper and the timers hold pooled connections; they must go back before the pool closes.
        await timers.stop()
        await parts_of(runtime, IndexKeeper).stop()
        worker.stop()

    return ServiceSpec(
        title="Campaigns",
        description="Order status changed -> filter customers -> send SMS, per partner.",
        migrations=Path(__file__).parent / "migrations",
        routers=[router, backtest_router],
        keeps_catalog=True,
        on_startup=start,
        on_shutdown=stop,
        readiness={"campaign_index": index_current},
        purges=retention_purges(
            timedelta(days=settings.evaluation_retention_days),
            timedelta(days=settings.fired_evaluation_retention_days),
            timedelta(days=settings.sms_outcome_retention_days),
        ),
        publishes=PUBLISHES,
    )


def create_app(settings: CampaignsSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    """`clock` decides "now" for every decision (quiet hours, cap windows); tests pass a fixed one."""
    settings = settings or CampaignsSettings()
    if settings.clock_file is not None and clock is utc_now:
        clock = OffsetClock(settings.clock_file)  # a test's kill -9 run moves the service's time forward
    # The backtests' decisions, in processes started when first needed.
    worker = ReplayWorker(settings.backtest_nice, settings.backtest_workers or None)
    # The journeys' durable timers, started with the service.
    timers = JourneyTimers(policy_of(settings), clock, longest_sleep_s=settings.journey_timers_sleep_s)
    app = create_service_app(settings, _on_startup(settings, clock, worker, timers))
    app.state.journey_timers = timers
    app.state.clock = clock
    app.state.backtest_worker = worker
    return app


def main() -> None:
    serve(CampaignsSettings(), create_app)


if __name__ == "__main__":
    main()
