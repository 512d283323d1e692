"""Rankings: members ordered by scores that writers add to, beside the cache.

A ranking is a set of members with float scores, kept under a name: in Redis
when ``PETPAL_REDIS_URL`` is set (``redis_rankings``, one sorted set), an
in-process equivalent otherwise. Writers add deltas to members' scores;
readers take the members with the highest scores, ties broken by the
members' bytes, highest first. Trending (``social.trending``) is its user.

A ranking is derived from the database, and rebuilt from it whole by the
next reader when it is missing (never made yet, expired, lost with a Redis
restart, deleted after a failed write). Writers add only to rankings that
exist or are being built, so a missing ranking never comes back as a part.

Adding is not idempotent, so a build must count each event once, whether
the database read finds it or a writer adds it while the build runs. A
build therefore takes a *cutoff* time as it begins: it loads from the
database what happened before the cutoff, while a writer's delta for an
event at or after it is put aside (*pending*) and added to the build's
result when that is stored. The one event counted wrongly is one dated
before the cutoff whose transaction commits after the build's database
read began (or, for a removal, one that commits between the two): a window
as long as a transaction, repaired by the next build.

Several processes may build one ranking at once. The first sets the cutoff
and the others adopt it; the first to finish stores its result, and a later
one serves its own result once. A build that dies leaves a placeholder that
expires after ``BUILD_SECONDS``.

A ranking holds ``keep`` members: once it holds a tenth more, the lowest
are dropped. A negative delta (an event taken back) never adds a member
that the ranking does not hold, though it may to the pending deltas of a
build, whose result may hold the member.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from petpal.platform.cache import Cache, CacheBackendError
from petpal.platform.store_calls import StoreCalls

# Every ranking name starts with this, under the cache key prefix in Redis.
KEY_PREFIX = "ranking:"
# A build that has not stored its result after this long has died.
BUILD_SECONDS = 60.0


class RankingBackend(Protocol):
    """Where rankings live. Raises only ``CacheBackendError`` for its own faults.

    Each method is one round trip. Times are milliseconds since the Unix
    epoch.
    """

    async def top(self, key: str, count: int) -> list[str] | None:
        """The ``count`` highest members; None if missing (or being built)."""
        ...

    async def begin_build(self, key: str, cutoff_ms: int, ttl: float) -> int:
        """Start a build, or join the one in progress; returns its cutoff."""
        ...

    async def finish_build(
        self,
        key: str,
        cutoff_ms: int,
        scores: Mapping[str, float],
        keep: int,
        ttl: float,
    ) -> bool:
        """Store ``scores`` plus the pending deltas, if no build finished
        first and the one of ``cutoff_ms`` was not voided; True if so."""
        ...

    async def add(
        self, key: str, deltas: Mapping[str, float], at_ms: int, keep: int
    ) -> None:
        """Add ``deltas`` of an event at ``at_ms`` to the ranking, or to a
        build's pending deltas if it is at or after the build's cutoff."""
        ...

    async def remove(self, key: str, members: Sequence[str]) -> None: ...
    async def delete(self, keys: Sequence[str]) -> None:
        """Delete rankings with their builds: a build in progress is voided."""
        ...

    async def clear(self) -> None: ...
    async def close(self) -> None: ...


def trim_threshold(keep: int) -> int:
    """A ranking is cut back to ``keep`` members once it holds more than this."""
    return keep + keep // 10


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(when: datetime) -> int:
    return (when - _UNIX_EPOCH) // _MS


@dataclass
class _Ranking:
    expires_at: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class _Build:
    expires_at: float
    cutoff_ms: int
    pending: dict[str, float] = field(default_factory=dict)


class InProcessRankingBackend:
    """Rankings in this process's memory: the rules of ``redis_rankings``."""

    def __init__(self) -> None:
        self._rankings: dict[str, _Ranking] = {}
        self._builds: dict[str, _Build] = {}

    def _ranking(self, key: str) -> _Ranking | None:
        ranking = self._rankings.get(key)
        if ranking is not None and ranking.expires_at <= time.monotonic():
            del self._rankings[key]
            return None
        return ranking

    def _build(self, key: str) -> _Build | None:
        build = self._builds.get(key)
        if build is not None and build.expires_at <= time.monotonic():
            del self._builds[key]
            return None
        return build

    async def top(self, key: str, count: int) -> list[str] | None:
        ranking = self._ranking(key)
        if ranking is None:
            return None
        return _highest(ranking.scores, count)

    async def begin_build(self, key: str, cutoff_ms: int, ttl: float) -> int:
        # Rankings are few (one per week for trending): expired ones go here.
        for name in list(self._rankings):
            self._ranking(name)
        if self._ranking(key) is not None:
            return cutoff_ms  # stored meanwhile: this build will not store
        build = self._build(key)
        if build is None:
            build = _Build(time.monotonic() + ttl, cutoff_ms)
            self._builds[key] = build
        return build.cutoff_ms

    async def finish_build(
        self,
        key: str,
        cutoff_ms: int,
        scores: Mapping[str, float],
        keep: int,
        ttl: float,
    ) -> bool:
        build = self._build(key)
        if self._ranking(key) is not None or build is None:
            return False
        if build.cutoff_ms != cutoff_ms:
            return False
        del self._builds[key]
        ranking = _Ranking(time.monotonic() + ttl, dict(scores))
        for member, delta in build.pending.items():
            ranking.scores[member] = ranking.scores.get(member, 0.0) + delta
        _trim(ranking.scores, keep)
        self._rankings[key] = ranking
        return True

    async def add(
        self, key: str, deltas: Mapping[str, float], at_ms: int, keep: int
    ) -> None:
        ranking = self._ranking(key)
        if ranking is not None:
            for member, delta in deltas.items():
                if delta >= 0 or member in ranking.scores:
                    ranking.scores[member] = ranking.scores.get(member, 0.0) + delta
            _trim(ranking.scores, keep)
            return
        build = self._build(key)
        if build is not None and at_ms >= build.cutoff_ms:
            for member, delta in deltas.items():
                build.pending[member] = build.pending.get(member, 0.0) + delta

    async def remove(self, key: str, members: Sequence[str]) -> None:
        ranking, build = self._ranking(key), self._build(key)
        for member in members:
            if ranking is not None:
                ranking.scores.pop(member, None)
            if build is not None:
                build.pending.pop(member, None)

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._rankings.pop(key, None)
            self._builds.pop(key, None)

    async def clear(self) -> None:
        self._rankings.clear()
        self._builds.clear()

    async def close(self) -> None:
        await self.clear()


def _highest(scores: Mapping[str, float], count: int) -> list[str]:
    """The ``count`` members of highest score, ties by member, highest first."""
    return heapq.nlargest(count, scores, key=lambda member: (scores[member], member))


def _trim(scores: dict[str, float], keep: int) -> None:
    if len(scores) > trim_threshold(keep):
        kept = set(_highest(scores, keep))
        for member in [m for m in scores if m not in kept]:
            del scores[member]


class Rankings:
    """Rankings with the platform's rules on top of a backend.

    A backend failure raises ``CacheBackendError``, and shares the cache's
    bypass (see ``store_calls``). A write that fails owes the ranking a
    deletion: it is rebuilt from the database at its next read, rather than
    served without the change for as long as it lives.
    """

    def __init__(self, backend: RankingBackend, *, cache: Cache) -> None:
        self.backend = backend
        self._calls = StoreCalls(backend, cache, store="ranking")

    async def top(self, key: str, count: int) -> list[str] | None:
        """The ``count`` highest members; None if the ranking must be built."""
        name = KEY_PREFIX + key
        return await self._calls.call(
            "ranking_read", lambda: self.backend.top(name, count)
        )

    async def build(
        self,
        key: str,
        load: Callable[[datetime], Awaitable[dict[str, float]]],
        *,
        now: datetime,
        keep: int,
        ttl: float,
    ) -> dict[str, float]:
        """Load a ranking from the database and store it; returns what ``load`` gave.

        ``load`` gets the cutoff (``now``, or the cutoff of a build already
        in progress) and returns the scores of what happened before it. If
        the store fails, the result is served once, not stored. Errors of
        ``load`` (the database) are raised.
        """
        name = KEY_PREFIX + key
        try:
            cutoff_ms = await self._calls.call(
                "ranking_build",
                lambda: self.backend.begin_build(name, _ms(now), BUILD_SECONDS),
            )
        except CacheBackendError:
            return await load(now)
        scores = await load(_UNIX_EPOCH + cutoff_ms * _MS)
        with contextlib.suppress(CacheBackendError):
            await self._calls.call(
                "ranking_build",
                lambda: self.backend.finish_build(name, cutoff_ms, scores, keep, ttl),
            )
        return scores

    async def add(
        self, key: str, deltas: Mapping[str, float], at: datetime, *, keep: int
    ) -> None:
        """Add ``deltas`` of an event that happened ``at`` (see the module)."""
        if deltas:
            name = KEY_PREFIX + key
            await self._calls.call(
                "ranking_add",
                lambda: self.backend.add(name, deltas, _ms(at), keep),
                owe=[name],
            )

    async def remove(self, key: str, members: Sequence[str]) -> None:
        if members:
            name = KEY_PREFIX + key
            await self._calls.call(
                "ranking_remove",
                lambda: self.backend.remove(name, members),
                owe=[name],
            )

    async def forget(self, *keys: str) -> None:
        """Delete rankings (and builds in progress): the next read rebuilds."""
        if keys:
            names = [KEY_PREFIX + k for k in keys]
            await self._calls.call(
                "ranking_delete", lambda: self.backend.delete(names), owe=names
            )

    async def clear(self) -> None:
        self._calls.forgive()
        await self.backend.clear()

    async def close(self) -> None:
        await self._calls.close()
        await self.backend.close()
