from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from contracts.topics import Topic
from servicekit.settings import LOCAL_POSTGRES, ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[4]


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    http_port: int = 8004
    database_url: str = f"{LOCAL_POSTGRES}/notifier"

    # Which provider sends: console (local default), http (a JSON gateway) or smpp.
    notifier_provider: Literal["console", "http", "smpp"] = "console"
    default_sender: str = "Notifier"

    console_outbox_file: Path = REPO_ROOT / ".state" / "notifier" / "sms.jsonl"
    console_auto_deliver: bool = True

    http_provider_url: str = "http://127.0.0.1:8090/v1/sms"
    http_provider_token: str = "local-dev-gateway-token"
    http_provider_timeout_s: float = 10.0
    # Shared secret the gateway sends in `X-Webhook-Secret` with delivery reports and inbound replies.
    delivery_report_secret: str = Field(default="local-dev-webhook-secret-0123456789", min_length=16)

    smpp_host: str = "127.0.0.1"
    smpp_port: int = 2775
    smpp_system_id: str = "notifier"
    smpp_password: str = "secret"
    smpp_system_type: str = ""
    smpp_submit_timeout_s: float = 10.0
    smpp_reconnect_max_s: float = 30.0

    # Per-provider rate limit (messages per second) and how many provider calls may be under way at once (sends
    # waiting for their outcome's transaction are not counted: `notifier.dispatcher.SENDS_PER_SLOT`).
    provider_rate_per_s: float = Field(default=50.0, gt=0)
    max_in_flight: int = Field(default=32, ge=1)

    # Retries of transient failures: exponential backoff with full jitter, Retry-After honoured.
    max_attempts: int = Field(default=5, ge=1)
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0

    # The dispatcher also polls in case a wake-up is missed (and for scheduled messages coming due).
    dispatch_poll_interval_s: float = 1.0
    # While the polls find nothing and nothing wakes it, they space out up to this (servicekit.polling); never past
    # the next scheduled message or retry, whose due time the last poll read.
    dispatch_idle_poll_s: float = Field(default=5.0, gt=0)
    # An attempt still "sending" this long after it started is orphaned (its process died) and is
    # reconciled with the provider. Must exceed the longest send: rate-limit wait + provider timeout.
    inflight_lease_s: float = 300.0
    # An attempt of this very instance that is "sending" but no longer among its sends (its outcome could not be
    # recorded: the database went away) is reconciled after this grace, not after the lease: the instance knows no
    # send of it is under way. The grace covers the moment between an intake's commit and the send's launch.
    own_orphan_grace_s: float = 30.0

    # Retention (servicekit.retention): finished attempts and delivery receipts are deleted this long after they
    # last changed; by then their message is long final (a SendSms lives sms_ttl_hours, 24 h by default) and no
    # redelivered report can refer to them. The messages themselves are kept: they are the record of what was sent
    # (GET /v1/messages) and their (partner, send_sms_id) key is what makes a repeated SendSms a no-op.
    attempt_retention_days: float = Field(default=90.0, ge=8)
    # Test sends (POST /v1/messages/test) per console user (the token's act.sub) in any hour, for every instance.
    test_sends_per_hour: int = Field(default=10, ge=1)
    receipt_retention_days: float = Field(default=90.0, ge=8)

    @property
    def consumer_group(self) -> str:
        # Namespaced like the topics: environments (and tests) sharing a broker never share a group.
        return f"{self.kafka_topic_prefix}notifier"

    @property
    def topic_send_sms(self) -> str:
        return self.topic(Topic.SEND_SMS)

    @property
    def topic_send_sms_dlq(self) -> str:
        return self.topic(Topic.SEND_SMS_DLQ)

    @property
    def topic_sms_events(self) -> str:
        return self.topic(Topic.SMS_EVENTS)
