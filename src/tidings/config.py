"""Settings, read once from the environment (prefix ``TIDINGS_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / 'tidings.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL people and clients use to reach this server; printed on start and returned by
    # `GET /api/v1/accounts/region`. Defaults to http://host:port.
    public_url: str | None = None
    region: str = "us"
    log_level: str = "info"
    # How long a verified credential is trusted without re-reading the database. Revocation in another
    # process takes effect within this many seconds.
    auth_cache_seconds: float = 2.0
    # Group commit: how many write units may share one transaction.
    write_batch_size: int = 256
    # Writer threads per process (see tidings.db.database for why one is the default).
    writer_threads: int = 1
    # Worker: how often it looks for due work, and how long a claimed job is leased.
    worker_poll_seconds: float = 1.0
    worker_lease_seconds: float = 60.0
    # Maintenance: how long anonymous events wait to be linked, and how long Pipelines messageIds dedup.
    anonymous_event_retention_days: int = 30
    pipelines_dedup_days: int = 7
    # People keys a segment build evaluates per step (one short transaction each); unset, it depends on
    # the database (tidings.segments.jobs.STEP_KEYS).
    segment_build_step: int | None = None
    # People keys per part of a step: the worker matches two parts at a time (tidings.segments.realtime).
    segment_build_part: int = 25_000
    # FastAPI's OpenTelemetry spans, metrics and logs for every request. Off by default: with no provider
    # configured it still costs a provider lookup per request (measured ~8% of the HTTP thread in B1).
    opentelemetry: bool = False
    # The default email sender for every workspace that sets none: smtp://host:port (STARTTLS when the
    # server offers it; ?starttls=require to insist, ?starttls=off to never), smtps://user:pass@host:465.
    smtp_url: str | None = None
    # Outbound HTTP to user-given URLs (reporting webhooks, the webhook channel) refuses private, loopback
    # and link-local addresses unless this is set (tests and single-host setups set it).
    outbound_allow_private: bool = False
    # Sending: how many deliveries a worker claims at once, and how long a claim lasts before another
    # worker may take the delivery over (a worker that died mid-send).
    send_batch_size: int = 50
    send_lease_seconds: float = 120.0
    # Sends in flight at once per worker: network waits overlap while the GIL is free.
    send_concurrency: int = 4
    # Journeys a worker claims and moves on in one transaction.
    journey_batch_size: int = 200
    # AI: the model catalogue (a JSON list, or a path to a JSON or YAML file holding one; see
    # tidings.ai.catalogue), provider keys and endpoints, and how many calls each provider may have in
    # flight per process.
    ai_models: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    google_api_key: str | None = None
    google_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "llama3.1"
    ai_timeout_seconds: float = 30.0
    ai_concurrency: int = 128
    # Credits a new account starts with (its first ledger entry), so a fresh install can try AI features.
    ai_initial_credits: float = 100.0
    # Shifts the clock (seconds); tests use it to move time without sleeping.
    clock_offset_seconds: float = 0.0
    # Test and demo aid: expose POST /_tidings/clock to move this process's clock forward. Never in
    # production: anyone who can reach it can make every time window pass.
    clock_control: bool = False

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
