from __future__ import annotations

from pydantic import Field

from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class WebhooksSettings(ServiceSettings):
    service_name: str = "webhooks"
    http_port: int = 8007
    database_url: str = f"{LOCAL_POSTGRES}/webhooks"

    # The consumer group of the three consumers (status changes, SMS events, status definitions).
    consumer_group: str = "webhooks"
    consumer_max_records: int = Field(default=500, ge=1)

    # Endpoints whose host resolves to a loopback, private, link-local, multicast, reserved or metadata address are
    # refused, at registration and at every delivery; development and tests, whose receivers run on 127.0.0.1,
    # allow them. Never in production: the platform would call into its own network for whoever registers a URL.
    webhooks_allow_private_targets: bool = False

    # Deliveries: at most this many requests in flight per instance, and per endpoint, so one slow endpoint holds at
    # most `per_endpoint` of the instance's slots and never delays another endpoint.
    delivery_concurrency: int = Field(default=64, ge=1)
    delivery_per_endpoint: int = Field(default=4, ge=1)
    # A whole request (connect, send, answer, body excerpt) ends after this long; it then counts as failed.
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    # A claimed message is this instance's for this long: longer than a request, so that only an instance that died
    # (or hung) mid-delivery lets another one deliver it again, with the same webhook-id.
    delivery_lease_s: float = Field(default=30.0, gt=0)
    # A failed attempt pauses its endpoint (every instance: the pause is in the database) for a tenth of its failure
    # streak, at least the first and at most the longest of these; after the pause one message probes it, and a
    # success gives it all its slots again (a dead endpoint is tried at this pace, not as fast as it refuses).
    delivery_failing_pause_s: float = Field(default=1.0, gt=0)
    delivery_failing_pause_max_s: float = Field(default=60.0, gt=0)
    # How often an idle dispatcher looks for due messages (a consumer that fans out, a finished delivery and a resend
    # wake it at once): retries and the end of a pause start within this. Every poll is a statement and a few
    # wake-ups, which a platform at rest pays for (docs/performance.md, issue 34): while the polls find nothing and
    # nothing wakes the dispatcher, they space out up to `delivery_idle_poll_s` (servicekit.polling), so a retry
    # or a pause's end coming due after a quiet spell starts up to that late.
    delivery_poll_interval_s: float = Field(default=1.0, gt=0)
    delivery_idle_poll_s: float = Field(default=5.0, gt=0)
    # How much of an endpoint's answer is read and kept in the delivery log; the rest is never read.
    response_excerpt_bytes: int = Field(default=1024, ge=0, le=64 * 1024)
    # A Retry-After longer than this is taken as this long.
    retry_after_cap_s: float = Field(default=3600.0, ge=0)
    # An endpoint whose deliveries have failed without a success for this long is disabled, with the reason.
    disable_after_failing_s: float = Field(default=5 * 24 * 3600.0, gt=0)
    # A delivered or given-up message, and its attempts, is deleted this long after it finished (its delivery log and
    # resend-failed reach back this far); a pending message is kept until it finishes.
    message_retention_days: float = Field(default=30.0, ge=1)
    # A rotated-away secret keeps signing (beside the new one) this long.
    secret_grace_s: float = Field(default=24 * 3600.0, ge=0)
