"""Settings every service shares, read from environment variables with working local defaults.

Each service subclasses `ServiceSettings` and overrides the defaults that differ (name, port,
database). The defaults match what `make infra-up` starts, so a fresh clone runs without a .env file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topics import Topic, prefixed
from servicekit.db import DEFAULT_SLOTS

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:54320"


@dataclass(frozen=True)
class Batching:
    """How a batch consumer trades a few milliseconds for fewer, larger batches (see `servicekit.consumer`)."""

    linger_ms: float = 0.0  # none unless a service sets one: see `ServiceSettings.consumer_linger_ms`
    commit_interval_s: float = 0.5
    # A batch lingers only when its first poll brought at least this many records: a lone record means a quiet
    # topic, where the linger gathers little and only adds its wait to the record's latency.
    linger_from_records: int = 1


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)
    # Whether the service's database holds the shared plumbing tables (outbox, processed events): every service
    # that publishes or consumes; not the console, whose database holds only its users.
    uses_outbox: ClassVar[bool] = True

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # A namespace in front of every topic name: one per environment, or one per test run.
    kafka_topic_prefix: str = ""

    database_url: str = f"{LOCAL_POSTGRES}/postgres"
    db_pool_min_size: int = 2
    db_pool_max_size: int = 10

    # Access tokens of the identity service (API clients' and the console's): `iss` is its public URL, where every
    # service fetches `{token_issuer}/.well-known/jwks.json` to verify them, and `aud` the platform's APIs.
    token_issuer: str = "http://127.0.0.1:8006"
    token_audience: str = "order-status-api"
    # How long a service keeps the issuer's JWKS before fetching it again: shorter than the issuer publishes a new
    # key ahead of signing with it (identity's KEY_PUBLISH_AHEAD_S, an hour), so every service knows the key first.
    token_jwks_max_age_s: float = Field(default=300.0, gt=0)

    # Wake-up signal for the outbox relay; the relay also polls so a lost notification only delays: every
    # outbox_poll_interval_s while it publishes, less and less often while it finds nothing, at the least every
    # outbox_idle_poll_s (a lost notification at rest is published within that).
    outbox_poll_interval_s: float = 1.0
    outbox_idle_poll_s: float = Field(default=5.0, gt=0)
    outbox_batch_size: int = 500
    # The outbox's shards by key hash, each relayed by one instance at a time: the same on every instance of a
    # service, and changed only with the outbox empty (a key moved to another slot could overtake its older rows).
    outbox_slots: int = Field(default=DEFAULT_SLOTS, ge=1, le=1024)

    # Consumers: a small batch waits this long for more records before it is processed (at moderate rates a
    # batch's fixed costs, its transaction and relay round trips, dominate), and processed offsets are committed
    # at most this often (and at stop). No linger by default: the platform's own topics are written by outbox
    # relays, a relay's batch at a time (one produce request), so a consumer of them finds the batch whole, and a
    # linger only added its wait to every hop: 25 ms each on campaigns' and the notifier's hops at 100 events/s for
    # no fewer transactions (docs/performance.md, issue 34). A service that reads records an upstream producer
    # sends one by one sets one (orders, `OrdersSettings`).
    consumer_linger_ms: float = Field(default=Batching.linger_ms, ge=0)
    consumer_commit_interval_s: float = Field(default=Batching.commit_interval_s, ge=0)
    consumer_linger_from_records: int = Field(default=Batching.linger_from_records, ge=1)

    # Python's cyclic garbage collector (`gc.set_threshold`): a young collection every N allocations, then the
    # older generations every so many young ones. CPython's (700, 10, 10) suits short scripts; with it a service
    # that allocates models for every record spent 10-20 % of its CPU collecting (docs/performance.md, fix 17).
    gc_thresholds: tuple[int, int, int] = (10_000, 20, 50)

    # Services that keep the status catalog replica: a REST write that names a status first waits, at most this
    # long, until the replica has read the registry's topic up to its end (read-your-writes across services).
    catalog_sync_timeout_s: float = Field(default=2.0, ge=0)
    # Retention (servicekit.retention): per-event bookkeeping is deleted in the background once it cannot matter,
    # every interval, in batches of at most batch_size rows with a pause between them; a purge waits at most
    # lock_timeout_ms for a lock, then gives way to the hot path until the next round.
    retention_interval_s: float = Field(default=3600.0, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1)
    retention_pause_s: float = Field(default=0.1, ge=0)
    retention_lock_timeout_ms: int = Field(default=500, ge=1)
    # Idempotency claims of the consumers (processed_events): longer than Kafka's default topic retention (7 days),
    # so even a group reset to the earliest offset finds the claims of every record it reads again.
    processed_events_retention_days: float = Field(default=8.0, ge=1)

    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"

    # Tracing: console (JSON spans to traces_file, stdout when empty), otlp (OTEL_EXPORTER_OTLP_*), none.
    traces_exporter: str = "console"
    traces_file: str = ""

    @property
    def batching(self) -> Batching:
        return Batching(
            linger_ms=self.consumer_linger_ms,
            commit_interval_s=self.consumer_commit_interval_s,
            linger_from_records=self.consumer_linger_from_records,
        )

    def topic(self, topic: Topic) -> str:
        return prefixed(topic, self.kafka_topic_prefix)
