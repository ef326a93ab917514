"""Wiring of the notifier: database, outbox relay, SendSms consumer, dispatcher, provider, HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from contracts.sms import SmsDelivered, SmsDispatched, SmsFailed
from contracts.topics import Topic
from notifier.api import install_error_handlers, router
from notifier.consumers import Intake
from notifier.dispatcher import Dispatcher
from notifier.domain import RetryPolicy
from notifier.events import Events, Topics
from notifier.limiter import SharedRateLimiter
from notifier.optouts import handle_inbound
from notifier.outcomes import OutcomeRecorder
from notifier.providers.base import DeliveryReport, InboundSms, Provider
from notifier.providers.console import ConsoleProvider
from notifier.providers.http import HttpProvider
from notifier.receipts import Receipts
from notifier.repository import retention_purges
from notifier.sending import Sending
from notifier.settings import NotifierSettings
from servicekit.app import Publishes, Runtime, ServiceSpec, create_service_app, parts_of, serve
from servicekit.consumer import DeadLetters, batch_subscriber

PUBLISHES = (
    Publishes(
        Topic.SMS_EVENTS,
        "What became of each SMS: dispatched, failed (with its reason), delivered; key {partner}:{phone}",
        (SmsDispatched, SmsFailed, SmsDelivered),
    ),
    Publishes(Topic.SEND_SMS_DLQ, "SendSms commands it could not read or gave up on; replayable (docs/notifier.md)"),
)


def make_provider(settings: NotifierSettings) -> Provider:
    if settings.notifier_provider == "http":
        return HttpProvider(
            settings.http_provider_url, settings.http_provider_token, timeout_s=settings.http_provider_timeout_s
        )
    if settings.notifier_provider == "smpp":
        from notifier.providers.smpp import SmppProvider

        return SmppProvider.from_settings(settings)
    return ConsoleProvider(settings.console_outbox_file, auto_deliver=settings.console_auto_deliver)


def create_app(settings: NotifierSettings | None = None, *, provider: Provider | None = None) -> FastAPI:
    """The notifier app; `provider` replaces the configured one (tests wrap a real provider with it)."""
    settings = settings or NotifierSettings()
    chosen = provider or make_provider(settings)

    async def on_startup(runtime: Runtime) -> None:
        topics = Topics(
            settings.topic_sms_events, settings.topic_send_sms, settings.topic_send_sms_dlq, settings.consumer_group
        )
        events = Events(topics)
        wake = asyncio.Event()
        policy = RetryPolicy(settings.max_attempts, settings.retry_base_s, settings.retry_max_s)
        dead_letters = DeadLetters(runtime.producer, topics.send_sms_dlq, topics.consumer_group)
        dispatcher = Dispatcher(
            pool=runtime.pool,
            provider=chosen,
            events=events,
            outcomes=OutcomeRecorder(runtime.pool, chosen, events, policy),
            # The provider's messages-per-second contract, for every instance together (notifier.limiter).
            limiter=SharedRateLimiter(runtime.pool, chosen.name, settings.provider_rate_per_s),
            wake=wake,
            default_sender=settings.default_sender,
            max_in_flight=settings.max_in_flight,
            lease_s=settings.inflight_lease_s,
            own_orphan_grace_s=settings.own_orphan_grace_s,
            poll_interval_s=settings.dispatch_poll_interval_s,
            idle_poll_s=settings.dispatch_idle_poll_s,
        )
        intake = Intake(runtime.pool, events, dead_letters, wake, dispatcher)
        batch_subscriber(
            runtime.broker,
            topics.send_sms,
            topics.consumer_group,
            intake.process,
            dead_letters,
            batching=settings.batching,
        )
        runtime.parts = Sending(chosen, Receipts(runtime.pool, events), dispatcher, intake)

        await _start_sending(runtime)

    spec = ServiceSpec(
        title="Notifier",
        description="Exactly one SMS per SendSms command, through console, HTTP or SMPP providers.",
        migrations=Path(__file__).parent / "migrations",
        routers=[router],
        on_startup=on_startup,
        on_shutdown=_stop_sending,
        install_handlers=install_error_handlers,
        purges=retention_purges(
            timedelta(days=settings.attempt_retention_days), timedelta(days=settings.receipt_retention_days)
        ),
        publishes=PUBLISHES,
    )
    return create_service_app(settings, spec)


async def _start_sending(runtime: Runtime) -> None:
    """Connect the provider (its receipts and replies feed the service) and start the dispatcher."""
    sending = parts_of(runtime, Sending)
    provider = sending.provider

    async def on_reports(reports: Sequence[DeliveryReport]) -> None:
        await sending.receipts.apply(provider.name, reports)

    async def on_inbound(inbound: InboundSms) -> None:
        await handle_inbound(runtime.pool, inbound)

    await provider.start(on_reports, on_inbound)
    sending.dispatcher_task = asyncio.create_task(sending.dispatcher.run(), name="dispatcher")


async def _stop_sending(runtime: Runtime) -> None:
    """Runs before the broker and the pool stop: in-flight sends are cancelled and stay `sending`
    until reconciled, which is the same path a crash takes."""
    sending = parts_of(runtime, Sending)
    if sending.dispatcher_task is not None:
        sending.dispatcher_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sending.dispatcher_task
    await sending.provider.stop()


def main() -> None:
    serve(NotifierSettings(), create_app)


if __name__ == "__main__":
    main()
