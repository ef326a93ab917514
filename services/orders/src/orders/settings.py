from __future__ import annotations

from pydantic import Field

from contracts.topics import Topic
from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class OrdersSettings(ServiceSettings):
    service_name: str = "orders"
    http_port: int = 8002
    database_url: str = f"{LOCAL_POSTGRES}/orders"

    consumer_group: str = "orders"
    consumer_max_records: int = 500
    # Upstream systems send their events one by one: a small batch lingers this long for more, so that several
    # share a transaction and the hops after it (docs/performance.md, fix 19 and issue 34).
    consumer_linger_ms: float = Field(default=25.0, ge=0)
    # Upstream records above this size are dead-lettered as oversized.
    max_inbound_bytes: int = 64 * 1024
    # Waits before each retry of a record whose status code or order is not known yet.
    unknown_status_retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0)
    # REST Idempotency-Keys are kept this long (then deleted by the retention clean-up): a client retries a
    # request within minutes; after this a repeated key is a new request.
    idempotency_key_retention_hours: float = Field(default=48.0, ge=24)
    # How long a REST write waits for a concurrent one on the same order or Idempotency-Key before answering 409
    # with Retry-After.
    request_lock_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def topic_inbound(self) -> str:
        return self.topic(Topic.ORDERS_INBOUND)

    @property
    def topic_inbound_retry(self) -> str:
        return self.topic(Topic.ORDERS_INBOUND_RETRY)

    @property
    def topic_inbound_dlq(self) -> str:
        return self.topic(Topic.ORDERS_INBOUND_DLQ)

    @property
    def topic_status_definitions(self) -> str:
        return self.topic(Topic.STATUS_DEFINITIONS)

    @property
    def topic_status_changed(self) -> str:
        return self.topic(Topic.ORDER_STATUS_CHANGED)
