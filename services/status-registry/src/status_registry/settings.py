from __future__ import annotations

from pydantic import Field

from contracts.topics import Topic
from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: str = "status-registry"
    http_port: int = 8001
    database_url: str = f"{LOCAL_POSTGRES}/status_registry"

    consumer_group: str = "status-registry"
    # A write answers once the broker acknowledged its events (so other services can read them at once), or
    # after this long: the write stands either way, and a timeout is logged and counted.
    publish_wait_s: float = Field(default=5.0, ge=0)

    @property
    def topic_status_definitions(self) -> str:
        return self.topic(Topic.STATUS_DEFINITIONS)
