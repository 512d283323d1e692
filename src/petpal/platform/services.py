"""The platform parts one process holds, built once at start-up."""

from __future__ import annotations

import functools
import importlib
import shutil
from dataclasses import dataclass, field
from typing import Any

import structlog

from petpal.platform import datadir
from petpal.platform.cache import (
    Cache,
    CacheBackend,
    CacheBackendError,
    InProcessBackend,
)
from petpal.platform.db import Database
from petpal.platform.jobs import EmbeddedRelay, JobContext, enqueue, job
from petpal.platform.rankings import (
    InProcessRankingBackend,
    RankingBackend,
    Rankings,
)
from petpal.platform.ratelimit import RateLimiter
from petpal.platform.redis_cache import RedisBackend
from petpal.platform.redis_rankings import RedisRankingBackend
from petpal.platform.redis_timelines import RedisTimelineBackend
from petpal.platform.settings import Settings
from petpal.platform.storage import Storage
from petpal.platform.timelines import (
    InProcessTimelineBackend,
    TimelineBackend,
    Timelines,
)

# The services of the platform; each has api, service, models and tasks modules.
SERVICE_NAMES = ("identity", "pets", "social", "media")


log = structlog.get_logger(__name__)


def import_task_modules(names: tuple[str, ...] = SERVICE_NAMES) -> None:
    """Register every job handler (a worker process runs any service's jobs)."""
    for name in names:
        importlib.import_module(f"petpal.{name}.tasks")


# Walk snapshots one process keeps in memory: new walks share one for a few
# seconds (a trending walk's, 5 s), so even a busy process makes no more
# than a couple of hundred in the 15 minutes each is kept.
WALKS_KEPT = 2000


@dataclass
class Services:
    settings: Settings
    db: Database
    cache: Cache
    storage: Storage
    secret: str
    limiter: RateLimiter
    timelines: Timelines
    rankings: Rankings
    # What a page-walk needs to finish (a trending walk's snapshot), apart
    # from the cache: with the cache off, or once its LRU has turned over,
    # as ordinary reading does on one busy process in a minute (found by a
    # trial), a walk still ends as it began.
    walks: Cache
    relay: EmbeddedRelay | None = None
    # Whether this holds its data directory (an embedded server: datadir.py).
    _claimed: bool = field(default=False, init=False, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(settings)
        cache = Cache(
            _cache_backend(settings),
            settings.cache_default_ttl_seconds,
            bypass_after_error=settings.cache_bypass_after_error_seconds,
        )
        cache.enabled = settings.cache_enabled
        services = cls(
            settings=settings,
            db=db,
            cache=cache,
            storage=Storage(settings),
            secret=settings.secret_key_or_generate(),
            limiter=RateLimiter.from_settings(settings),
            timelines=Timelines(
                _timeline_backend(settings),
                cap=settings.timeline_max_entries,
                ttl_seconds=settings.timeline_ttl_seconds,
                cache=cache,
            ),
            rankings=Rankings(_ranking_backend(settings), cache=cache),
            walks=Cache(
                cache.backend
                if settings.redis_url
                else InProcessBackend(max_entries=WALKS_KEPT),
                bypass_after_error=settings.cache_bypass_after_error_seconds,
            ),
        )
        if settings.redis_url:
            # Processes share this cache: one that cannot reach it hands its
            # owed invalidations to the others (see cache.py).
            cache.hand_over = functools.partial(_hand_over_invalidations, db)
        if settings.run_jobs_in_process and not settings.broker_url:
            services.relay = EmbeddedRelay(
                db,
                services,
                concurrency=settings.job_workers,
                poll_seconds=settings.job_poll_seconds,
                max_attempts=settings.job_max_attempts,
                retry_base_seconds=settings.job_retry_base_seconds,
                sole_runner=settings.jobs_run_alone,
            )
            db.on_job_commit(services.relay.wake)
        return services

    async def start(self) -> None:
        if self.relay is not None:
            if self.relay.sole_runner:
                # Before anything of the jobs is touched (see datadir.py).
                datadir.claim(self.settings.data_dir)
                self._claimed = True
                # What jobs of a process that was killed left in their
                # scratch folders (a photo being decoded: up to 25 MB each,
                # found by a trial); no other process uses them.
                shutil.rmtree(self.settings.data_dir / "tmp", ignore_errors=True)
            self.relay.start()

    async def close(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        if self._claimed:
            datadir.release(self.settings.data_dir)
            self._claimed = False
        await self.timelines.close()
        await self.rankings.close()
        if self.walks.backend is not self.cache.backend:
            await self.walks.close()
        await self.cache.close()
        await self.limiter.close()
        await self.db.dispose()


CACHE_DELIVERY_JOB = "cache.deliver"


async def _hand_over_invalidations(db: Database, keys: list[str]) -> None:
    async with db.write_session() as session:
        enqueue(session, CACHE_DELIVERY_JOB, {"keys": keys})


@job(CACHE_DELIVERY_JOB)
async def _deliver_invalidations(ctx: JobContext, payload: dict[str, Any]) -> None:
    """What a process owed the cache after a write, delivered by whichever
    process runs the job; tried again while the cache cannot be reached.

    The last try gives up quietly rather than dead: a cache down for longer
    than the retries is an outage the logs and metrics already show, and
    its keys are still delivered by the process that owes them, or expire
    with their TTL; the dead list is for work that would otherwise be lost.
    """
    services: Services = ctx.services
    keys = [str(key) for key in payload.get("keys", [])]
    try:
        await services.cache.deliver(*keys)
    except CacheBackendError:
        if ctx.attempt < services.settings.job_max_attempts:  # not the last
            raise
        log.warning("cache.delivery_given_up", keys=len(keys), job_id=ctx.job_id)


def _cache_backend(settings: Settings) -> CacheBackend:
    if settings.redis_url:
        return RedisBackend.from_settings(settings)
    return InProcessBackend()


def _timeline_backend(settings: Settings) -> TimelineBackend:
    if settings.redis_url:
        return RedisTimelineBackend.from_settings(settings)
    return InProcessTimelineBackend()


def _ranking_backend(settings: Settings) -> RankingBackend:
    if settings.redis_url:
        return RedisRankingBackend.from_settings(settings)
    return InProcessRankingBackend()
