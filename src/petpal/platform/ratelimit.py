"""Rate limits per account and per client IP, on the ``limits`` library.

Counters live in process memory (embedded) or in Redis under the cache's key
prefix (distributed), so every replica counts against the same budget.

The strategy is the moving window: it counts the hits of the last N seconds
exactly, so a client cannot spend a fixed window's budget at the end of one
window and again at the start of the next (twice the limit within a second,
which matters most for log-in guessing), and the time a slot frees, which
``Retry-After`` reports, is exact. It costs one sorted list of at most
``limit`` timestamps per key; our largest limit is 300, so that stays small.

A limiter that cannot reach its storage lets requests through (fail open):
rate limits protect against abuse, and turning a Redis outage into an outage
of every write would be the worse trade. Such failures are logged and counted,
and the storage is then left alone for a moment, so that a hung Redis costs at
most one request per interval its socket timeout.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio
import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from prometheus_client import Counter
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from petpal.platform.errors import ProblemError, problem_response
from petpal.platform.observability import raw_header
from petpal.platform.redis_cache import connection_pool
from petpal.platform.security import read_access_token
from petpal.platform.settings import Settings
from petpal.platform.text import canonical_login

log = structlog.get_logger(__name__)

RATE_LIMITED = Counter(
    "petpal_rate_limited_total", "Requests refused 429 by a rate limit", ["limit"]
)
STORAGE_FAILURES = Counter(
    "petpal_rate_limit_storage_errors_total",
    "Rate-limit checks let through because the limiter's storage failed",
)

# IPv6 clients are counted per /64: one subscriber usually holds a whole /64
# and could otherwise step to a fresh address for every request.
_IPV6_PREFIX = 64

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Quota:
    """Where a client stands against one limit, for the X-RateLimit-* headers."""

    limit: int
    remaining: int
    reset_at: float  # Unix time at which the oldest counted hit leaves the window

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            # Unix seconds, as the large public APIs send it.
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class RateLimitedError(ProblemError):
    def __init__(self, quota: Quota) -> None:
        retry_after = max(1, math.ceil(quota.reset_at - time.time()))
        super().__init__(
            429,
            "rate_limited",
            f"too many requests; retry in {retry_after} seconds",
            headers={"Retry-After": str(retry_after), **quota.headers()},
        )


class RateLimiter:
    """Checks named limits; built once per process by ``Services``."""

    def __init__(
        self,
        storage: Storage,
        limits: dict[str, RateLimitItem],
        *,
        enabled: bool,
        bypass_after_error: float,
        pool: redis.asyncio.ConnectionPool | None = None,
    ) -> None:
        self.storage = storage
        self.limits = limits
        self.enabled = enabled
        self._strategy = MovingWindowRateLimiter(storage)
        self._bypass_after_error = bypass_after_error
        self._bypass_until = 0.0
        self._pool = pool

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        limits = {
            "anonymous": settings.rate_limit_anonymous,
            "sign_up": settings.rate_limit_sign_up,
            "sign_up_attempt": settings.rate_limit_sign_up_attempt,
            "log_in_ip": settings.rate_limit_log_in_ip,
            "log_in_name": settings.rate_limit_log_in_name,
            "upload": settings.rate_limit_upload,
            "post": settings.rate_limit_post,
            "like": settings.rate_limit_like,
            "comment": settings.rate_limit_comment,
            "follow": settings.rate_limit_follow,
            "pet": settings.rate_limit_pet,
        }
        items = {name: parse(text) for name, text in limits.items()}
        storage, pool = _storage(settings)
        return cls(
            storage,
            items,
            enabled=settings.rate_limits_enabled,
            # The cache's figure: both back off from the same Redis alike.
            bypass_after_error=settings.cache_bypass_after_error_seconds,
            pool=pool,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def enforce(
        self,
        checks: Sequence[tuple[str, str]],
        *,
        with_quota: bool = True,
        later: Sequence[tuple[str, str]] = (),
    ) -> Quota | None:
        """Count one hit against each ``(limit name, identifier)`` in order.

        Raises ``RateLimitedError`` at the first limit that is spent (later
        ones are not charged). Returns the tightest quota for the headers
        (one more storage round trip per limit; ``with_quota=False`` skips
        it), or ``None`` when limits are off or the storage failed.

        The limits in ``later`` are only checked, after ``checks``: a spent
        one refuses the request early, before it costs anything, and the
        caller charges it (``enforce`` again) once it knows the request
        counts. Their quota says what is left now.
        """
        if not self.enabled or time.monotonic() < self._bypass_until:
            return None
        tightest: Quota | None = None
        try:
            counted = [(check, self._strategy.hit) for check in checks]
            counted += [(check, self._strategy.test) for check in later]
            for (name, identifier), count in counted:
                item = self.limits[name]
                allowed = await count(item, name, identifier)
                if allowed and not with_quota:
                    continue
                stats = await self._strategy.get_window_stats(item, name, identifier)
                quota = Quota(item.amount, stats.remaining, stats.reset_time)
                if not allowed:
                    RATE_LIMITED.labels(name).inc()
                    raise RateLimitedError(quota)
                if tightest is None or quota.remaining < tightest.remaining:
                    tightest = quota
        except (StorageError, OSError) as exc:
            STORAGE_FAILURES.inc()
            self._bypass_until = time.monotonic() + self._bypass_after_error
            log.warning("ratelimit.storage_failed", error=type(exc).__name__)
            return None
        return tightest


def _storage(
    settings: Settings,
) -> tuple[Storage, redis.asyncio.ConnectionPool | None]:
    if not settings.redis_url:
        return MemoryStorage(), None
    # Our own pool, with the cache's short timeouts, so that a hung Redis
    # holds a request only briefly and the pool can be closed at shut-down.
    pool = connection_pool(settings)
    storage = RedisStorage(
        # The scheme picks the storage class (redis, rediss, redis+unix); the
        # connection itself comes from the pool.
        "async+" + settings.redis_url,
        implementation="redispy",
        wrap_exceptions=True,
        # Under the cache's prefix, which is there to keep deployments sharing
        # one Redis (and test runs) apart.
        key_prefix=settings.cache_key_prefix + "ratelimit",
        # limits types its options as scalars; redis-py takes a pool here.
        connection_pool=pool,  # type: ignore[arg-type]
    )
    return storage, pool


class AnonymousLimitMiddleware:
    """Charges API requests that carry no valid access token to the client IP.

    A middleware rather than a dependency so that it covers every route under
    ``prefix``, unknown paths and malformed requests included. Successful
    answers carry no X-RateLimit-* headers from it: that would cost every
    anonymous read a second storage round trip.
    """

    def __init__(self, app: ASGIApp, prefix: str = "/api/v1") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        if not _is_signed_in(scope, services.secret):
            # Only an anonymous request needs the Request (for its client IP).
            request = Request(scope, receive)
            ip = client_ip(request, services.settings.trusted_proxies)
            try:
                await services.limiter.enforce([("anonymous", ip)], with_quota=False)
            except RateLimitedError as refused:
                response = problem_response(
                    request,
                    refused.status,
                    refused.code,
                    refused.detail,
                    headers=refused.headers,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_signed_in(scope: Scope, secret: str) -> bool:
    header = raw_header(scope, b"authorization")
    if header is None:
        return False
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return read_access_token(secret, token.strip()) is not None


def client_ip(connection: HTTPConnection, trusted_proxies: Sequence[str]) -> str:
    """The address to count a request against.

    The peer of the connection, unless it is one of ``trusted_proxies``: then
    the rightmost ``X-Forwarded-For`` entry that is not itself trusted (the
    entries to its left were written by the client and prove nothing).
    """
    peer = connection.client.host if connection.client else "unknown"
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    if networks and _is_trusted(peer, networks):
        forwarded = connection.headers.get("x-forwarded-for", "")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _is_trusted(hop, networks):
                peer = hop
                break
    return _counted_address(peer)


def _is_trusted(address: str, networks: Sequence[_Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _counted_address(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # "unknown", or a proxy's garbage: counted as one
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{_IPV6_PREFIX}", strict=False))
    return str(ip)


def login_key(login: str, account_id: str | None = None) -> str:
    """The per-name log-in bucket: the account ``login`` names, or, when it
    names none, the login as the service matches it; hashed.

    Every submitted string counts, whether or not an account has it, so that
    the answers for known and unknown accounts cannot be told apart; all the
    ways to name one account (its username in any spelling, its e-mail
    address) share its bucket (found by a trial: the e-mail address had a
    bucket of its own, twice the guesses). Hashed, because the string may be
    an e-mail address and would sit in Redis.
    """
    named = f"account:{account_id}" if account_id else canonical_login(login)
    return hashlib.sha256(named.encode()).hexdigest()[:32]
