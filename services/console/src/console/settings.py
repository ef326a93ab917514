from __future__ import annotations

from pydantic import Field, SecretStr

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
    # Identity: the tokens of the console's backend calls (its token endpoint, as the platform's own client
    # `console`, whose secret is CONSOLE_CLIENT_SECRET, the same as identity's), and the partner's API clients,
    # managed by its admins on the API clients page. The default secret only suits a laptop.
    identity_url: str = "http://127.0.0.1:8006"
    # Webhooks: the partner's endpoints, their delivery log and resends, managed by its admins on the Webhooks pages.
    webhooks_url: str = "http://127.0.0.1:8007"
    console_client_secret: SecretStr = Field(default=SecretStr("local-dev-console-client-secret-change-me-0123"))
    backend_timeout_s: float = Field(default=5.0, gt=0)

    # Sessions live in the console's database; the cookie (HttpOnly, SameSite=Lax) holds only a random id, and is
    # Secure whenever the request came over HTTPS, or always with SESSION_COOKIE_SECURE=true (production, behind a
    # proxy that terminates TLS). A session ends after SESSION_IDLE_TIMEOUT_S unused and SESSION_MAX_AGE_S after
    # sign-in. SESSION_SECRET keys the CSRF tokens: the default only suits a laptop, set it in production.
    session_secret: str = Field(default="local-console-session-secret-change-me-0123456789", min_length=32)
    session_cookie_secure: bool = False
    session_idle_timeout_s: int = Field(default=30 * 60, ge=60)
    session_max_age_s: int = Field(default=12 * 3600, ge=60)

    # Sign-in throttling (docs/console.md): past these many failures, each further one doubles the wait, from 32 s
    # up to SIGN_IN_MAX_DELAY_S. Per account: failures since its last sign-in; per address: failures in an hour.
    sign_in_free_failures_per_account: int = Field(default=5, ge=1)
    sign_in_free_failures_per_address: int = Field(default=20, ge=1)
    sign_in_max_delay_s: int = Field(default=900, ge=1)
    sign_ins_kept_days: int = Field(default=90, ge=1)  # the record of sign-ins and failures

    default_language: str = "en"
    default_time_zone: str = "Europe/Moscow"
