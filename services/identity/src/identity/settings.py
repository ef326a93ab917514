from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr

from servicekit.settings import LOCAL_POSTGRES, ServiceSettings


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    http_port: int = 8006
    database_url: str = f"{LOCAL_POSTGRES}/identity"

    # A revocation answers once the broker acknowledged its event, so every service can refuse the client's
    # tokens right after (or after this long: the revocation stands either way and is published later).
    publish_wait_s: float = Field(default=5.0, ge=0)

    # Access tokens: `iss` is this service's public URL, TOKEN_ISSUER (the verifiers fetch
    # `{iss}/.well-known/jwks.json`), `aud` the platform's APIs, TOKEN_AUDIENCE: both ServiceSettings', as every
    # service verifies with them.
    token_ttl_s: int = Field(default=900, ge=60, le=24 * 3600)

    # Signing keys. A new key is published this long before it signs: longer than any verifier keeps a JWKS
    # (servicekit.jwks caches it 5 minutes, and the answer says `max-age=jwks_max_age_s`), so every verifier
    # knows it before the first token it signs arrives.
    key_publish_ahead_s: float = Field(default=3600.0, ge=0)
    # The signing key is rotated automatically once this old (0: only by `python -m identity.keys rotate`).
    key_rotate_after_s: float = Field(default=30 * 24 * 3600.0, ge=0)
    # How often an instance reads the keys again (another instance may have rotated): the longest an instance
    # signs with a key after another one stopped it, which the old key's publication covers.
    key_refresh_s: float = Field(default=5.0, gt=0)
    # Clock skew between instances and verifiers, added to how long a retired key stays published.
    clock_leeway_s: float = Field(default=30.0, ge=0)
    jwks_max_age_s: int = Field(default=300, ge=0)
    # Encrypts the private keys in the database (JWE dir + A256GCM under a key derived from it). The default only
    # suits a laptop: set KEY_ENCRYPTION_SECRET in production, the same on every instance.
    key_encryption_secret: SecretStr = Field(
        default=SecretStr("local-dev-key-encryption-secret-change-me"), min_length=32
    )

    # The secret of the platform's own client, `console` (domain.FIRST_PARTY_CLIENT_ID): the console gets its users'
    # tokens with it, for any partner, and `make token` mints with it. The default only suits a laptop: set
    # CONSOLE_CLIENT_SECRET in production, the same in the console; empty: no first-party client.
    console_client_secret: SecretStr = Field(default=SecretStr("local-dev-console-client-secret-change-me-0123"))

    # How long a rotated-away client secret keeps working, unless the rotation says otherwise.
    secret_grace_period_s: int = Field(default=24 * 3600, ge=0, le=30 * 24 * 3600)
    # argon2 verifications at once: each takes a core and `argon2_memory_kib` for a few milliseconds.
    secret_verifications: int = Field(default=2, ge=1)

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(seconds=self.token_ttl_s)

    @property
    def key_outlives_signing(self) -> timedelta:
        """How long after a key stops signing a token it signed may still arrive: the token's lifetime, plus how
        long an instance may go on signing with it before it reads the keys again, plus clock leeway."""
        return timedelta(seconds=self.token_ttl_s + self.key_refresh_s + self.clock_leeway_s)
