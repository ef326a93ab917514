from __future__ import annotations

from pydantic import Field

from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class ConsoleSettings(ServiceSettings):
    service_name: str = "console"
    http_port: int = 8005
    # Its own database holds only the console's users; everything else it reads and writes through the APIs.
    database_url: str = f"{LOCAL_POSTGRES}/console"

    # The four services' public HTTP APIs (the console is their client, a backend-for-frontend).
    registry_url: str = "http://127.0.0.1:8001"
    orders_url: str = "http://127.0.0.1:8002"
    campaigns_url: str = "http://127.0.0.1:8003"
    notifier_url: str = "http://127.0.0.1:8004"
    backend_timeout_s: float = Field(default=5.0, gt=0)
    # A backend call carries a partner token minted for the signed-in user, valid this long.
    backend_token_ttl_s: int = Field(default=300, ge=10)

    # Sessions are signed cookies (HttpOnly, SameSite=Lax). The default secret only suits a laptop: set
    # SESSION_SECRET in production, and SESSION_COOKIE_SECURE=true behind HTTPS.
    session_secret: str = Field(default="local-console-session-secret-change-me-0123456789", min_length=32)
    session_cookie_secure: bool = False
    session_max_age_s: int = Field(default=12 * 3600, ge=60)

    default_language: str = "en"
    default_time_zone: str = "Europe/Moscow"
