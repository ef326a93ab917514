from __future__ import annotations

from contracts.topics import Topic
from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: str = "status-registry"
    http_port: int = 8001
    database_url: str = f"{LOCAL_POSTGRES}/status_registry"

    consumer_group: str = "status-registry"

    @property
    def topic_status_definitions(self) -> str:
        return self.topic(Topic.STATUS_DEFINITIONS)
