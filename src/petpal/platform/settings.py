"""One typed settings object, read from ``PETPAL_*`` environment variables.

With nothing set, PetPal runs embedded: SQLite, the in-process cache and job
runner, and media on local disk, all below ``PETPAL_DATA_DIR``. The URLs
choose the distributed engines: ``PETPAL_DATABASE_URL`` (PostgreSQL through
asyncpg), ``PETPAL_REDIS_URL`` (Redis as the cache, the home timelines, the
trending ranking and the rate-limit store) and ``PETPAL_BROKER_URL``
(RabbitMQ: jobs go to Celery workers instead of running in the serving
process).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from limits import parse
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A key or queue-name prefix: at least one visible ASCII character before its
# separator.
_PREFIX = re.compile(r"[!-~]{2,100}")
# Each prefix setting: what it is, the separator it must end in, its
# default, and what it names.
_PREFIXES = {
    "cache_key_prefix": ("a Redis key prefix", ":", "petpal:", "keys"),
    "broker_prefix": ("a broker prefix", ".", "petpal.", "queues"),
}
# The schemes of the backends' URLs each setting accepts.
_URL_SCHEMES = {
    "database_url": (
        "postgresql+asyncpg",
        "postgresql",
        "postgres",
        "sqlite+aiosqlite",
    ),
    "redis_url": ("redis", "rediss", "unix"),
    "broker_url": ("amqp", "amqps", "pyamqp"),
}


MIN_SECRET_KEY_LENGTH: Final = 32


# The longest duration a setting may give: ten years.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600


class Settings(BaseSettings):
    # No infinite or NaN number: PETPAL_JOB_POLL_SECONDS=inf was taken.
    model_config = SettingsConfigDict(
        env_prefix="PETPAL_", extra="ignore", allow_inf_nan=False
    )

    # Where the embedded mode keeps its database, media and generated secret.
    data_dir: Path = Path("var")
    # Empty means "SQLite in data_dir"; e.g. postgresql+asyncpg://… otherwise.
    database_url: str = ""
    # Empty means the in-process cache; e.g. redis://127.0.0.1:6379/0 otherwise.
    redis_url: str = ""
    # Empty means "local disk in data_dir/media".
    storage_url: str = ""
    # Base URL under which stored media files are served to clients.
    media_base_url: str = "/media-files"

    # Signs access tokens and cursors. Embedded mode generates one into
    # data_dir on first start; a distributed deployment must set it, so that
    # every replica signs alike (see `secret_key_or_generate`).
    secret_key: str = ""
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=1)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    # A refresh token used again this soon after its first use is the same
    # client retrying (its answer lost to a timeout on a phone's network,
    # two tabs refreshing at once), not a thief: it gets a pair of its own
    # rather than revoking the family. 0: every second use revokes it.
    refresh_reuse_grace_seconds: float = Field(default=30.0, ge=0)
    # The least zxcvbn score (0-4) a new password needs: 2 refuses common
    # passwords and their variants (``password123``, ``12345678``, the
    # username with digits), which a few tries at each account would find
    # across many accounts. 0 accepts any of 8 characters or more.
    password_min_strength: int = Field(default=2, ge=0, le=4)

    # Largest JSON body any route accepts; uploads have their own limit.
    max_json_body_bytes: int = Field(default=64 * 1024, ge=1)
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    max_upload_pixels: int = Field(default=50_000_000, ge=1)
    # A benchmark baseline, never for production: the upload request decodes
    # the photo and stores its variants itself before answering (still 202,
    # with the media ready or failed) instead of queueing the media job.
    # benchmarks/freshness.py measures the accept latency both ways.
    media_process_inline: bool = False
    # A photo whose processing job died keeps its raw upload, GPS and all,
    # this long so that `petpal jobs replay` can still process it; then the
    # media.discard_upload job deletes the upload and the photo stays failed.
    # A week outlasts a long weekend without anyone reading the dead list.
    media_failed_upload_retention_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    # `petpal media sweep-uploads` deletes a raw upload that no media row
    # names only once it is this old: an upload is stored a moment before its
    # row commits.
    media_orphan_upload_grace_seconds: float = Field(default=3600, ge=0)

    # Embedded job runner: worker threads and how often the relay polls the
    # outbox when nothing woke it (a commit that writes a job wakes it at once).
    job_workers: int = Field(default=2, ge=1)
    job_poll_seconds: float = Field(default=1.0, gt=0)
    # A job that fails is tried again after about 2, 4, 8 … times this many
    # seconds (with jitter), and is dead after job_max_attempts attempts.
    job_max_attempts: int = Field(default=5, ge=1)
    job_retry_base_seconds: float = Field(default=1.0, gt=0)
    # The embedded runner can be switched off, e.g. for a process that only
    # serves HTTP while a separate worker process runs the jobs. It never runs
    # when a broker is set: `petpal relay` and `petpal worker` do the work.
    run_jobs_in_process: bool = True

    # Empty: jobs run in process. e.g. amqp://guest:guest@127.0.0.1:5672// to
    # hand them to Celery workers through RabbitMQ (platform/broker.py).
    broker_url: str = ""
    # Prepended to every exchange and queue name, so several deployments (or
    # test runs) can share one RabbitMQ virtual host.
    broker_prefix: str = "petpal."
    # The relay looks for new outbox rows this often when nothing woke it
    # (on PostgreSQL a commit that adds a job wakes it at once).
    relay_poll_seconds: float = Field(default=0.5, gt=0)
    # Connecting to RabbitMQ: a broker that does not answer within this is down.
    broker_timeout_seconds: float = Field(default=4.0, gt=0)
    # RabbitMQ dead-letters a message delivered this many times without an
    # acknowledgement (workers that die on it). High enough to ride out a
    # database outage, during which workers hand messages back after a pause.
    broker_delivery_limit: int = Field(default=20, ge=1)
    broker_requeue_pause_seconds: float = Field(default=3.0, ge=0)
    # Rows handed to the broker per transaction, each publish confirmed.
    relay_batch_size: int = Field(default=200, ge=1)
    # A queued job not started after this long is published again: the
    # broker lost it. Generous, because a long queue is not a lost message.
    job_requeue_after_seconds: int = Field(default=3600, ge=60)

    # PostgreSQL connection pool, per process. A process holds at most
    # pool_size + max_overflow connections, so replicas × that must stay below
    # the server's max_connections (or a pooler's limit in front of it).
    # The default adds up to the admission limit (max_concurrent_requests,
    # 32): under full load a request never waits for a connection, and the
    # pool keeps most of them open instead of opening and closing overflow
    # connections on every burst.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=12, ge=0)
    # How long a request waits for a free pooled connection before it is
    # answered 503: a saturated pool sheds load instead of queueing without end.
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # Test each pooled connection with a round trip (three statements on
    # asyncpg) before handing it out. Off by default: connections the server
    # closed (a restart) are replaced at checkout anyway, without a round
    # trip (db.py). Turn it on where connections can die silently, behind a
    # pooler or a network that drops idle connections.
    db_pool_pre_ping: bool = False
    # Connections are replaced after this long, so a failover behind a DNS
    # name or a pooler is picked up and server-side memory does not creep.
    db_pool_recycle_seconds: int = Field(default=1800, ge=1)
    # TCP connect plus start-up handshake; a server that does not answer within
    # this is treated as down (503) rather than holding the request.
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Server-side statement_timeout: PostgreSQL cancels a statement running
    # longer than this (503 to the client) so one runaway query cannot hold a
    # connection and its locks indefinitely.
    db_statement_timeout_seconds: float = Field(default=15.0, gt=0)

    cache_default_ttl_seconds: int = Field(default=300, ge=1)
    # Prepended to every Redis key, so several deployments (or test runs) can
    # share one Redis without touching each other's keys.
    cache_key_prefix: str = "petpal:"
    # Redis socket timeouts. Short on purpose: a hung Redis may slow a request
    # by at most this much before the answer comes from the database instead.
    cache_connect_timeout_seconds: float = Field(default=0.25, gt=0)
    cache_socket_timeout_seconds: float = Field(default=0.25, gt=0)
    # After a Redis failure the cache is bypassed for this long, so that only
    # one request per interval waits for the timeout while Redis is down.
    cache_bypass_after_error_seconds: float = Field(default=1.0, ge=0)
    # Connections each process may open to Redis.
    cache_max_connections: int = Field(default=64, ge=1)
    # Requests at work at once in one server process; more wait up to
    # admission_wait_seconds for a place, then get 503 with Retry-After.
    # Kept under cache_max_connections, so that a burst waits here, in
    # order, rather than for a Redis connection, whose wait counts as Redis
    # being down (platform/app.py, AdmissionMiddleware).
    max_concurrent_requests: int = Field(default=32, ge=1)
    admission_wait_seconds: float = Field(default=2.0, ge=0)
    log_json: bool = False
    log_level: str = "INFO"

    # Rate limits (platform/ratelimit.py), in the `limits` notation
    # ("<count>/<n><unit>"), checked against a moving window. The figures sit
    # where large public platforms publish theirs. Off only for tests that
    # would otherwise sign up hundreds of accounts from one address.
    rate_limits_enabled: bool = True
    # Every API request without a valid access token, per client IP.
    rate_limit_anonymous: str = "300/5minutes"
    # Per client IP; a household or an office shares one address. Sign-ups
    # that made an account or found its name or address taken; one refused
    # for what was typed (a weak password, a name not allowed) does not
    # count there, but every attempt counts against the second, so that a
    # script gains nothing by sending refused ones.
    rate_limit_sign_up: str = "5/hour"
    rate_limit_sign_up_attempt: str = "30/hour"
    # Log-in attempts, per client IP and per submitted login (whether or not
    # an account has it): the second slows guessing spread over many IPs.
    rate_limit_log_in_ip: str = "10/minute"
    rate_limit_log_in_name: str = "10/minute"
    # Per account.
    rate_limit_upload: str = "30/30minutes"
    rate_limit_post: str = "50/hour"
    rate_limit_like: str = "300/hour"
    rate_limit_comment: str = "100/hour"
    rate_limit_follow: str = "100/hour"
    # Pets made or changed (found by a trial: 150 made in two seconds filled
    # the adoption listing, and listing one again moves it to the top).
    rate_limit_pet: str = "50/hour"
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is
    # believed, e.g. ["10.0.0.0/8"]. Empty: the TCP peer is the client.
    trusted_proxies: list[str] = []

    # Home timelines (social/home.py): each post's id is fanned out on write
    # into its followers' timelines, in Redis when redis_url is set.
    # Ids kept per timeline; a walk past the oldest is served by the database.
    # A timeline may grow a sixteenth past it before a write trims it back
    # (platform/timelines.py), so most writes skip the trim.
    timeline_max_entries: int = Field(default=800, ge=1)
    # A timeline unread this long expires, and with it the fan-out to that
    # account: only timelines that exist receive posts. The next read of the
    # feed rebuilds it from the database.
    timeline_ttl_seconds: float = Field(default=3 * 24 * 3600, gt=0)
    # How long a feed read waits for a missing timeline to be rebuilt before
    # it serves the page straight from the database instead; the rebuild
    # goes on and is stored for the next read.
    timeline_rebuild_budget_seconds: float = Field(default=0.25, ge=0)
    # Authors with more followers than this are not fanned out (one post
    # would mean that many writes); their followers' pages merge in their
    # recent posts at read time.
    fanout_max_followers: int = Field(default=10_000, ge=0)

    # Trending: posts older than this leave the trending feed, and their
    # likes and comments no longer count (the decay is in social/trending.py).
    trending_window_hours: int = Field(default=72, ge=1)

    # The benchmark report's baselines (platform/baselines.py): extra routes
    # that answer a constant, one Redis GET, one primary-key select. Off in
    # every deployment; `python3 dev.py bench` turns it on for its server.
    benchmark_baselines: bool = False
    # The report's naive path: no cache at all (every read goes to the
    # database, home feeds are not read from the timelines).
    cache_enabled: bool = True

    @field_validator(
        "rate_limit_anonymous",
        "rate_limit_sign_up",
        "rate_limit_sign_up_attempt",
        "rate_limit_log_in_ip",
        "rate_limit_log_in_name",
        "rate_limit_upload",
        "rate_limit_post",
        "rate_limit_like",
        "rate_limit_comment",
        "rate_limit_follow",
        "rate_limit_pet",
    )
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        parse(value)  # raises ValueError, so a typo fails at start-up
        return value

    @field_validator("*")
    @classmethod
    def _check_duration(cls, value: Any, info: ValidationInfo) -> Any:
        # Found by a trial: an access-token life of 10^20 s was taken, and
        # every log-in was a 500 (a timedelta that large overflows).
        name = info.field_name or ""
        if name.endswith(("_seconds", "_hours")) and isinstance(value, int | float):
            seconds = value * 3600 if name.endswith("_hours") else value
            if seconds > MAX_DURATION_SECONDS:
                raise ValueError(
                    f"a duration is at most {MAX_DURATION_SECONDS:,} seconds "
                    "(ten years)"
                )
        return value

    @field_validator("database_url", "redis_url", "broker_url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        # Found by a trial: "notaurl" or a MySQL URL failed deep inside the
        # driver, in a traceback of 178 lines.
        schemes = _URL_SCHEMES[str(info.field_name)]
        scheme, separator, rest = value.partition("://")
        if value and (not separator or not rest or scheme not in schemes):
            raise ValueError(
                f"not a URL this setting takes: one of {', '.join(schemes)}://…, "
                "or empty"
            )
        return value

    @field_validator("cache_key_prefix", "broker_prefix")
    @classmethod
    def _check_prefix(cls, value: str, info: ValidationInfo) -> str:
        # `petpal cache clear` and a new database's migration delete every
        # key under the Redis one: an empty prefix deleted another
        # application's keys in a shared Redis, and "petpal" those of
        # "petpal_bench:" (found by a trial). Queues share a host as keys do.
        what, separator, default, names = _PREFIXES[str(info.field_name)]
        if not _PREFIX.fullmatch(value) or not value.endswith(separator):
            raise ValueError(
                f"{what} is visible ASCII characters ending in '{separator}' "
                f"({default}), so that it names this deployment's {names} and "
                "no one else's"
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: str) -> str:
        # Found by a trial: a key of one space signed tokens. HS256 wants a
        # key of 256 bits or more; 32 characters are the least we take.
        # Imported here: the text module brings regex and email_validator,
        # 50 ms every command would pay at start-up for a key it may not have.
        from petpal.platform.text import visible_length

        if value and visible_length(value) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"at least {MIN_SECRET_KEY_LENGTH} characters, not counting "
                "spaces and invisible ones, if given: a long random string, "
                "such as secrets.token_urlsafe(48) makes"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "petpal.sqlite3"

    @property
    def effective_database_url(self) -> str:
        url = self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path}"
        # The URL a PostgreSQL provider hands out names no driver; ours is asyncpg.
        for bare in ("postgres://", "postgresql://"):
            if url.startswith(bare):
                return "postgresql+asyncpg://" + url.removeprefix(bare)
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def jobs_run_alone(self) -> bool:
        """Whether a process of these settings is its database's only job
        runner: embedded, on SQLite without Redis (a second server process
        is refused), its jobs in process (see platform/datadir.py)."""
        return (
            self.run_jobs_in_process
            and not self.broker_url
            and not self.redis_url
            and self.is_sqlite
        )

    @property
    def media_dir(self) -> Path:
        """Root of the local object store (keys start with media/ or incoming/)."""
        return self.data_dir / "storage"

    def secret_key_missing(self) -> str | None:
        """Why the tokens' key must be given, if it must be and was not."""
        if self.database_url and not self.secret_key:
            return (
                "PETPAL_SECRET_KEY must be set when PETPAL_DATABASE_URL is: every "
                "replica has to sign tokens with the same key"
            )
        return None

    def secret_key_or_generate(self) -> str:
        if self.secret_key:
            return self.secret_key
        if missing := self.secret_key_missing():
            raise RuntimeError(missing)
        key_file = self.data_dir / "secret.key"
        if not key_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        return key_file.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
