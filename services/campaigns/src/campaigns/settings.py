from __future__ import annotations

from pydantic import Field

from contracts.topics import Topic
from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class CampaignsSettings(ServiceSettings):
    service_name: str = "campaigns"
    http_port: int = 8003
    database_url: str = f"{LOCAL_POSTGRES}/campaigns"

    consumer_group: str = "campaigns"
    sms_events_consumer_group: str = "campaigns.sms-events"
    consumer_max_records: int = 500

    # Customers' phones arrive as typed upstream; numbers without a country code are read in this region.
    default_phone_region: str = "RU"
    # The recipient's zone when the number's region spans several (every Russian mobile number does).
    default_time_zone: str = "Europe/Moscow"
    # A SendSms is valid this long from the moment it may first be sent; the notifier drops it after that.
    sms_ttl_hours: float = Field(default=24.0, gt=0)

    # The orders API, whose status history the backtest replays (campaigns.backtest), called with the caller's token.
    orders_url: str = "http://127.0.0.1:8002"
    # The backtest decides in a worker process this much nicer than the service (0-19): the live path comes first.
    backtest_nice: int = Field(default=10, ge=0, le=19)
    # Its worker processes, each deciding the changes of a share of the customers; 0: one per core, at most 4.
    backtest_workers: int = Field(default=0, ge=0, le=4)

    # Journeys' durable timers: each instance looks for the earliest due run at least this often (sooner when one is
    # due sooner, or its own consumer made one due now, which is how each instance hears of its own new runs), so a
    # run left due by an instance that died waits at most this long for another.
    journey_timers_sleep_s: float = Field(default=5.0, gt=0, le=60)
    # Tests only: a file holding an offset in seconds added to the real clock (re-read when it changes), so a
    # test moves a real subprocess's time forward. Unset: the real clock.
    clock_file: str | None = None

    # Retention (servicekit.retention); what goes is first added to the campaign's stats roll-up, so the stats
    # stay whole. Evaluations that sent nothing and the notifier's SMS outcomes: kept longer than any
    # redelivery of the event or report they record (their primary keys make a redelivery a no-op).
    evaluation_retention_days: float = Field(default=90.0, ge=8)
    sms_outcome_retention_days: float = Field(default=90.0, ge=8)
    # Fired evaluations back the frequency cap (windows of at most 31 days) and "once per order" re-entry: an
    # order whose status changes again after this long may get that campaign's SMS once more.
    fired_evaluation_retention_days: float = Field(default=400.0, ge=32)

    @property
    def topic_status_changed(self) -> str:
        return self.topic(Topic.ORDER_STATUS_CHANGED)

    @property
    def topic_send_sms(self) -> str:
        return self.topic(Topic.SEND_SMS)

    @property
    def topic_sms_events(self) -> str:
        return self.topic(Topic.SMS_EVENTS)
