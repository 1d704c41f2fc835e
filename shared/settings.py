"""Settings of model-proxy, read from the environment (prefix ``MODEL_PROXY_``) and nothing else.

Only this module reads ``os.environ`` for settings; entry points call :func:`get_settings` and pass
the object on. ``${NAME}`` references inside servers.json and models.json are resolved by the
config loader, which receives the environment from the entry point.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model_proxy.shared.webhooks.signing import signing_key
from model_proxy.shared.webhooks.urls import parse_origins

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Everything that can be set from the environment, with its default."""

    # populate_by_name: Settings(show_status_page=True) works although that field has env aliases
    model_config = SettingsConfigDict(
        env_prefix="MODEL_PROXY_",
        extra="ignore",
        populate_by_name=True,
        # an invalid value is named, never shown: it may be a secret
        hide_input_in_errors=True,
    )

    redis_url: str | None = Field(
        default=None,
        description="Redis for jobs, results and tokens. Unset: `serve` starts an embedded Redis.",
    )
    servers_file: Path = Path("servers.json")
    models_file: Path = Path("models.json")
    data_dir: Path = Field(
        default=Path("model-proxy-data"),
        description="Where the embedded Redis keeps its data.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="HTTPS certificate; unset: zhiva.crt in the working directory, if present.",
    )
    tls_key_file: Path | None = Field(
        default=None,
        description="HTTPS private key; unset: zhiva.key in the working directory, if present.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        # what zhiva's own token server allows: its sites, and pages served from this machine
        default=[
            "https://*.zhiva.ai",
            "https://*.zhiva.org",
            "http://localhost:*",
            "https://localhost:*",
            "http://127.0.0.1:*",
            "https://127.0.0.1:*",
            "http://[::1]:*",
            "https://[::1]:*",
        ],
        description="Web pages allowed to call the API: comma-separated origin patterns, or *.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default=["localhost"],
        description="Host names the API answers to (the Host header; any port): comma-separated "
        "names, *.domain for its subdomains, or * for any. IP literals are always answered "
        "(they cannot be rebound); /healthz and /readyz answer any Host.",
    )
    anonymous: Literal["viewer", "none"] | None = Field(
        default=None,
        description="Requests without credentials: viewer (the zhiva viewer's way) or none "
        "(401). Unset: viewer while serve listens on loopback only; serve on any other address "
        "refuses to start until this is decided, or treats it as none when the API key file "
        "holds a key.",
    )
    api_keys_file: Path = Field(
        default=Path("api-keys.json"),
        description="The API key file `model-proxy keys` writes (salted hashes only); the API "
        "rereads it when it changes.",
    )
    api_key_concurrent_checks: int = Field(
        default=2,
        gt=0,
        description="API keys checked (scrypt, 16 MiB and tens of ms each) at once per process.",
    )
    api_key_waiting_checks: int = Field(
        default=16,
        ge=0,
        description="Key checks that may wait for a turn; past it a new key is 503 busy at once.",
    )
    api_key_max_failures: int = Field(
        default=5,
        gt=0,
        description="Wrong secrets for one key id within the failure window before further "
        "unverified attempts for it are 429 too_many_failures without a check.",
    )
    api_key_failure_window_seconds: float = Field(
        default=60.0, gt=0, description="The window in which wrong secrets for a key id count."
    )
    jwt_issuer: str | None = Field(
        default=None,
        description="The OIDC issuer (iss) whose bearer tokens are accepted, e.g. a Keycloak "
        "realm's URL; needs MODEL_PROXY_JWT_AUDIENCE.",
    )
    jwt_audience: str | None = Field(
        default=None, description="The audience (aud) a token must be issued for."
    )
    jwks_url: str | None = Field(
        default=None,
        description="The issuer's signing keys; unset: the jwks_uri of its discovery document.",
    )
    jwt_leeway_seconds: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed when checking exp and nbf."
    )
    jwks_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest a fetch of the discovery document or JWKS takes."
    )
    jwks_min_refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A token with an unknown key id fetches the JWKS again at most this often.",
    )
    jwks_max_age_seconds: float = Field(
        default=300.0, gt=0, description="The signing keys are fetched again after this long."
    )
    jwks_max_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest discovery document or JWKS read."
    )
    audit_log: str = Field(
        default="stdout",
        min_length=1,
        description="Where the audit log goes: stdout (or -), or a file path (appended, created "
        "with mode 0600). One JSON line per access to patient-derived data.",
    )
    queue_name: str = "inference"
    redis_prefix: str = Field(
        default="model-proxy",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The prefix of every Redis key (jobs, results, tokens, metrics, the Celery "
        "queues): deployments with different prefixes share one Redis without sharing jobs.",
    )
    job_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    sync_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a viewer's GET waits for its job before answering 202.",
    )
    submit_max_body_bytes: int = Field(
        default=8192, gt=0, description="Largest JSON body POST /jobs reads (larger: 413)."
    )
    idempotency_key_ttl_seconds: int = Field(
        default=24 * 3600, gt=0, description="How long an Idempotency-Key names its job."
    )
    idempotency_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a POST /jobs waits for the job of an Idempotency-Key whose first "
        "request is still making it, before 409 idempotency_key_in_flight.",
    )
    event_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between the comment heartbeats of an idle event stream (and "
        "its safety re-read of the job).",
    )
    max_event_streams: int = Field(
        default=2000,
        ge=1,
        description="Event streams (`GET /jobs/{id}/events`) one API process keeps open; one "
        "more is answered 503 `busy`.",
    )
    max_event_stream_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long an event stream stays open before the server ends it (the "
        "client reconnects with `Last-Event-ID`).",
    )
    progress_events_per_second: float = Field(
        default=4.0,
        gt=0,
        description="How often a worker writes and announces a job's fetch progress, at most "
        "(the last instance always).",
    )
    local_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long the API keeps a stored answer in memory (0: off).",
    )
    answer_gzip_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="gzip level the worker stores answers at, once (0: stored uncompressed).",
    )
    answer_gzip_min_bytes: int = Field(
        default=1024,
        ge=0,
        description="Answers smaller than this are stored (and served) uncompressed.",
    )
    job_time_limit: float = Field(
        default=900.0, gt=0, description="Longest a job may run; models.json timeLimit overrides."
    )
    queue_full_retry_after: int = Field(
        default=5, gt=0, description="Seconds a 429 answer asks the client to wait."
    )
    max_queued_per_model: int = Field(
        default=200, gt=0, description="Queued jobs per model before 429; models.json maxQueued."
    )
    max_queued_per_client: int = Field(
        default=20,
        ge=0,
        description="Unfinished jobs one caller (an API key, a token's subject, or an anonymous "
        "client address) may wait for at once before 429 too_many_jobs (0: no limit).",
    )
    job_lease_seconds: float = Field(
        default=20.0, gt=0, description="A worker renews its job's lease; a dead one lets it lapse."
    )
    reaper_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often workers look for jobs of dead workers."
    )
    queued_recovery_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A job queued this long whose task message is gone is sent again.",
    )
    eta_weight: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Weight of a model's latest run in its average durations (the ETA's basis).",
    )
    eta_history_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="A model's average durations are forgotten after this long without a run.",
    )
    eta_running_scan: int = Field(
        default=500,
        gt=0,
        description="Most running jobs read to estimate when the running ones end.",
    )
    worker_presence_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A worker's announcement of its queues and pool size lasts this long (it "
        "renews it three times as often); the ETA counts the live ones.",
    )
    max_attempts: int = Field(
        default=3,
        gt=0,
        description="Tries of a transient failure in a run; runs lost to a dead worker.",
    )
    retry_first_delay: float = Field(
        default=0.5, gt=0, description="Seconds before the first retry of a transient failure."
    )
    retry_max_delay: float = Field(
        default=8.0, gt=0, description="Longest wait before any one retry (backoff doubles)."
    )
    retry_total_delay: float = Field(
        default=20.0, ge=0, description="Most seconds one job waits in all its retries together."
    )
    shutdown_grace_seconds: float = Field(
        default=25.0,
        ge=0,
        description="On SIGTERM a worker lets running jobs finish this long, then hands them back.",
    )
    # Redis clients of the API, the workers and Celery: reply, connect and pool-wait timeouts
    # (seconds), PING before using a connection idle this long (0: off), connections per process
    redis_socket_timeout: float = Field(default=5.0, gt=0)
    redis_connect_timeout: float = Field(default=2.0, gt=0)
    redis_health_check_interval: float = Field(default=15.0, ge=0)
    redis_max_connections: int = Field(default=512, gt=0)
    redis_pool_timeout: float = Field(default=2.0, gt=0)
    pacs_connect_timeout: float = Field(default=10.0, gt=0)
    pacs_read_timeout: float = Field(default=120.0, gt=0)
    model_connect_timeout: float = Field(default=10.0, gt=0)
    model_read_timeout: float = Field(default=600.0, gt=0)
    max_instance_bytes: int = Field(
        default=256 * 2**20,
        gt=0,
        description="Largest DICOM instance a job fetches; models.json maxInstanceBytes overrides.",
    )
    max_input_bytes: int = Field(
        default=2 * 2**30,
        gt=0,
        description="Most bytes a job fetches from the PACS in all; models.json maxInputBytes.",
    )
    max_answer_bytes: int = Field(
        default=256 * 2**20,
        gt=0,
        description="Largest model answer a job stores; models.json maxAnswerBytes overrides.",
    )
    max_source_header_bytes: int = Field(
        default=64 * 2**20,
        gt=0,
        description="Most bytes of source headers a job keeps to build its DICOM objects.",
    )
    max_result_object_bytes: int = Field(
        default=256 * 2**20,
        gt=0,
        description="Most bytes of DICOM objects (SEG, SR) a job keeps beside its answer.",
    )
    own_series_ttl_seconds: int = Field(
        default=30 * 24 * 3600,
        gt=0,
        description="How long the series stored into a study are left out of its model inputs.",
    )
    token_refresh_margin: float = Field(
        default=60.0, ge=0, description="Refresh an access token this many seconds before exp."
    )
    token_lock_timeout: float = Field(
        default=30.0, gt=0, description="A token-server call holds the server's lock at most this."
    )
    worker_concurrency: int = Field(default=4, gt=0)
    log_level: str = "INFO"
    show_status_page: bool = Field(
        default=False,
        # the original proxy's variable, and ours
        validation_alias=AliasChoices("MODEL_PROXY_SHOW_STATUS_PAGE", "ZHIVA_SHOW_STATUS_PAGE"),
        description="Serve GET /status (ZHIVA_SHOW_STATUS_PAGE=true also turns it on).",
    )
    status_timeout: float = Field(
        default=3.0, gt=0, description="Seconds each check of the status page may take."
    )
    api_url: str = Field(
        default="http://127.0.0.1:8002",
        description="Where `model-proxy infer` and `model-proxy jobs` find the API.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The API key `model-proxy infer` and `model-proxy jobs` send (needed to "
        "list jobs: anonymous callers are not answered).",
    )

    callback_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Where job callbacks (`?callback=`) may point: comma-separated origins, "
        "`scheme://host[:port]`, matched exactly; empty: callbacks are refused.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The key that signs webhooks, `whsec_<base64>` (Standard Webhooks); "
        "needed when callback origins are set.",
    )
    webhook_retry_seconds: float = Field(
        default=3600.0, gt=0, description="How long a webhook is retried before it fails."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Seconds a webhook POST takes at most, answer included."
    )
    webhook_connect_timeout_seconds: float = Field(
        default=3.0, gt=0, description="Seconds a webhook POST may take to connect."
    )
    webhook_queue: str = Field(
        default="model-proxy-webhooks",
        min_length=1,
        description="The Celery queue of webhook deliveries; every worker consumes it besides "
        "its own queues, so webhooks are never queued behind inference.",
    )
    webhook_backoff_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two tries of a webhook."
    )
    webhook_recovery_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A webhook whose delivery has not moved for this long (past its longest "
        "backoff and its try's timeouts: a lost task message, a process killed between queuing "
        "steps) is queued again by the reaper.",
    )
    webhook_max_answer_bytes: int = Field(
        default=64 * 2**10, gt=0, description="Most bytes of a callback's answer read (none kept)."
    )
    max_callbacks_per_job: int = Field(
        default=10, gt=0, description="Most callbacks one job keeps (identical requests share it)."
    )
    public_url: str | None = Field(
        default=None,
        description="The API's public base URL; webhooks' job links are made absolute with it "
        "(unset: relative).",
    )

    @field_validator("callback_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            parse_origins(value)  # a malformed origin stops the start, naming the setting
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing_key(value)  # a malformed secret stops the start, naming the setting
        return value

    @model_validator(mode="after")
    def _callbacks_need_a_secret(self) -> Settings:
        if self.callback_origins and self.webhook_secret is None:
            raise ValueError(
                "MODEL_PROXY_CALLBACK_ORIGINS allows callbacks but MODEL_PROXY_WEBHOOK_SECRET is "
                "not set: webhooks are signed; set it to whsec_<base64 of 24 to 64 random bytes>"
            )
        return self

    @field_validator("show_status_page", mode="before")
    @classmethod
    def _flag(cls, value: object) -> object:
        """``true`` (any case, as the original reads it), ``1``, ``yes`` or ``on`` turn the page
        on; anything else, empty included, leaves it off rather than stopping the start."""
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return value

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
