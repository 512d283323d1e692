"""Capped timelines of ids, newest first: the store behind fan-out feeds.

A timeline is a set of ids (ULIDs, so their order is their age) kept under
a name, capped at ``timeline_max_entries``, that expires when nobody has read
it for ``timeline_ttl_seconds``. Writers only ever add to timelines that
exist: a missing timeline is rebuilt whole from the database by the next
reader, which is what makes "the timeline exists" a cheap and exact test of
"someone reads it". Redis holds them when ``PETPAL_REDIS_URL`` is set
(``redis_timelines``); an in-process equivalent otherwise.

The cap is kept with a slack of a sixteenth (``trim_slack``): a timeline may
grow to cap + slack ids, and the write that would pass that trims it back to
the newest cap ids in one step. So most writes skip counting and trimming,
and a timeline holds at most a sixteenth more than the cap. Readers need not
care: ids past the cap are ids like any other, and a complete timeline over
the cap still holds every id there is, so it stays complete until trimmed.

Besides its ids a timeline carries three facts, kept with the ids so that
one read returns them together:

- *ready*: a build finished. A timeline that is not ready is being built;
  readers treat it as missing, writers add to it so that nothing committed
  during the build is lost.
- *complete*: it holds every id there is. Once entries were trimmed (or the
  build stopped at the cap), it vouches only for ids from its oldest entry
  up, and a page below that must come from the database. Writers never add
  an id below the oldest entry of an incomplete timeline, since that would
  claim knowledge of a range it does not hold.
- *links*: names of other timelines merged in at read time (the authors
  with too many followers to fan out).

A build holds a token in the timeline from before its database read until
it stores the result, and stores only if its token is still there. Deleting
the timeline (``forget``, e.g. after an unfollow) removes the token, so a
build that read the database before the change can never store what it read.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from petpal.platform.cache import Cache, CacheBackendError
from petpal.platform.store_calls import StoreCalls

log = structlog.get_logger(__name__)

# Every timeline name starts with this, under the cache key prefix in Redis.
KEY_PREFIX = "timeline:"
# A build that has not stored its result after this long has died; its
# placeholder then expires with it.
BUILD_SECONDS = 60.0
# How many of a long write's calls (see ``TimelineBackend.add_batch``) are in
# flight at once: the next batch is encoded while the store works on one.
ADDS_IN_FLIGHT = 4


def trim_slack(cap: int) -> int:
    """How far past ``cap`` a timeline may grow before a write trims it."""
    return cap // 16


@dataclass(frozen=True)
class TimelineSlice:
    """Part of a timeline: ids below a bound, newest first, and its facts."""

    ids: list[str]
    complete: bool
    links: list[str]


@dataclass(frozen=True)
class TimelineContent:
    """A timeline as a build loads it from the database."""

    ids: list[str]  # newest first, at most the cap
    complete: bool  # the database had no more than these
    links: list[str] = field(default_factory=list)

    def slice(self, before: str | None, count: int) -> TimelineSlice:
        below = [i for i in self.ids if before is None or i < before]
        return TimelineSlice(below[:count], self.complete, list(self.links))


class TimelineBackend(Protocol):
    """Where timelines live. Raises only ``CacheBackendError`` for its own faults.

    Each method is one round trip, whatever the number of keys; ``Timelines``
    gives ``add`` at most ``add_batch`` keys a call.
    """

    # Timelines one ``add`` call names at most; None: any number.
    add_batch: int | None

    async def read(
        self, keys: Sequence[str], before: str | None, count: int, ttl: float
    ) -> list[TimelineSlice | None]:
        """Up to ``count`` ids below ``before`` of each ready timeline (None:
        missing or still building); each one read lives ``ttl`` seconds more."""
        ...

    async def begin_build(self, key: str, token: str, ttl: float) -> None: ...
    async def finish_build(
        self,
        key: str,
        token: str,
        content: TimelineContent,
        cap: int,
        slack: int,
        ttl: float,
    ) -> bool:
        """Store ``content`` if ``token`` is still in the timeline; True if so."""
        ...

    async def add(
        self,
        keys: Sequence[str],
        ids: Sequence[str],
        links: Sequence[str],
        cap: int,
        slack: int,
    ) -> list[str]:
        """Add to those of ``keys`` that exist; returns them.

        A timeline past ``cap + slack`` ids afterwards keeps the newest ``cap``.
        """
        ...

    async def remove(self, keys: Sequence[str], ids: Sequence[str]) -> None: ...
    async def unlink(self, key: str, ids: Sequence[str], link: str) -> bool:
        """Take ``ids`` and the link ``link`` out of a ready timeline; True if
        so. One that is being built is deleted instead, with its builds."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...
    async def has_mark(self, key: str) -> bool: ...
    async def set_mark(self, key: str, ttl: float) -> None: ...
    async def clear(self) -> None: ...
    async def close(self) -> None: ...


@dataclass
class _Timeline:
    expires_at: float
    ids: list[str] = field(default_factory=list)  # oldest first
    ready: bool = False
    complete: bool = False
    links: set[str] = field(default_factory=set)
    builds: set[str] = field(default_factory=set)


class InProcessTimelineBackend:
    """Timelines in this process's memory, least recently used evicted first.

    The same rules as the Redis scripts in ``redis_timelines``, in Python.
    """

    # No round trip to save, none to overlap: batches would only cost tasks.
    add_batch: int | None = None

    # A full timeline of 800 ids takes about 70 KB here: 5,000 of them,
    # far more than a laptop's accounts, stay within a few hundred MB.
    def __init__(self, max_timelines: int = 5_000) -> None:
        self._data: OrderedDict[str, _Timeline] = OrderedDict()
        self._marks: dict[str, float] = {}
        self._max_timelines = max_timelines

    def _get(self, key: str) -> _Timeline | None:
        timeline = self._data.get(key)
        if timeline is not None and timeline.expires_at <= time.monotonic():
            del self._data[key]
            return None
        return timeline

    async def read(
        self, keys: Sequence[str], before: str | None, count: int, ttl: float
    ) -> list[TimelineSlice | None]:
        slices: list[TimelineSlice | None] = []
        for key in keys:
            timeline = self._get(key)
            if timeline is None or not timeline.ready:
                slices.append(None)
                continue
            timeline.expires_at = time.monotonic() + ttl
            self._data.move_to_end(key)
            end = len(timeline.ids)
            if before is not None:
                end = bisect.bisect_left(timeline.ids, before)
            newest_first = timeline.ids[max(0, end - count) : end][::-1]
            slices.append(
                TimelineSlice(newest_first, timeline.complete, sorted(timeline.links))
            )
        return slices

    async def begin_build(self, key: str, token: str, ttl: float) -> None:
        expires_at = time.monotonic() + ttl
        timeline = self._get(key)
        if timeline is None:
            timeline = _Timeline(expires_at)
            self._data[key] = timeline
            while len(self._data) > self._max_timelines:
                self._data.popitem(last=False)
        timeline.builds.add(token)
        timeline.expires_at = max(timeline.expires_at, expires_at)

    async def finish_build(
        self,
        key: str,
        token: str,
        content: TimelineContent,
        cap: int,
        slack: int,
        ttl: float,
    ) -> bool:
        timeline = self._get(key)
        if timeline is None or token not in timeline.builds:
            return False
        timeline.builds.discard(token)
        if timeline.ready:
            _add_ids(timeline, content.ids)
        else:
            timeline.ready, timeline.complete = True, content.complete
            ids = set(timeline.ids).union(content.ids)
            if not content.complete and content.ids:
                floor = min(content.ids)
                ids = {i for i in ids if i >= floor}
            timeline.ids = sorted(ids)
        timeline.links.update(content.links)
        _trim(timeline, cap, slack)
        timeline.expires_at = time.monotonic() + ttl
        return True

    async def add(
        self,
        keys: Sequence[str],
        ids: Sequence[str],
        links: Sequence[str],
        cap: int,
        slack: int,
    ) -> list[str]:
        added = []
        for key in keys:
            timeline = self._get(key)
            if timeline is None:
                continue
            if timeline.ready and not timeline.complete and not timeline.ids:
                del self._data[key]  # knows nothing any more: rebuilt when read
                continue
            _add_ids(timeline, ids)
            timeline.links.update(links)
            _trim(timeline, cap, slack)
            added.append(key)
        return added

    async def remove(self, keys: Sequence[str], ids: Sequence[str]) -> None:
        gone = set(ids)
        for key in keys:
            timeline = self._get(key)
            if timeline is not None:
                timeline.ids = [i for i in timeline.ids if i not in gone]

    async def unlink(self, key: str, ids: Sequence[str], link: str) -> bool:
        timeline = self._get(key)
        if timeline is None:
            return False
        if not timeline.ready or timeline.builds:
            del self._data[key]
            return False
        gone = set(ids)
        timeline.ids = [i for i in timeline.ids if i not in gone]
        timeline.links.discard(link)
        return True

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._data.pop(key, None)
            self._marks.pop(key, None)

    async def has_mark(self, key: str) -> bool:
        expires_at = self._marks.get(key)
        return expires_at is not None and expires_at > time.monotonic()

    async def set_mark(self, key: str, ttl: float) -> None:
        self._marks[key] = time.monotonic() + ttl

    async def clear(self) -> None:
        self._data.clear()
        self._marks.clear()

    async def close(self) -> None:
        await self.clear()


def _add_ids(timeline: _Timeline, ids: Iterable[str]) -> None:
    # An incomplete timeline vouches only for ids from its oldest entry up.
    incomplete = timeline.ready and not timeline.complete
    floor = timeline.ids[0] if incomplete and timeline.ids else None
    for new in ids:
        if floor is not None and new < floor:
            continue
        at = bisect.bisect_left(timeline.ids, new)
        if at == len(timeline.ids) or timeline.ids[at] != new:
            timeline.ids.insert(at, new)


def _trim(timeline: _Timeline, cap: int, slack: int) -> None:
    if len(timeline.ids) > cap + slack:
        del timeline.ids[: len(timeline.ids) - cap]
        timeline.complete = False


class Timelines:
    """Timelines with the platform's rules on top of a backend.

    A backend failure raises ``CacheBackendError``: a reader then serves the
    page from the database, a job retries. The backend shares the cache's
    bypass (see ``store_calls``).

    A write that fails may have missed timelines that stay warm, which would
    then lack a post or still show an unfollowed account until the job's
    retry. So the timelines a failed write named are owed a deletion, and
    rebuilt from the database at their next read.
    """

    def __init__(
        self, backend: TimelineBackend, *, cap: int, ttl_seconds: float, cache: Cache
    ) -> None:
        self.backend = backend
        self.cap = cap
        self.slack = trim_slack(cap)
        self.ttl = ttl_seconds
        self._calls = StoreCalls(backend, cache, store="timeline")
        self._builds: dict[str, asyncio.Task[TimelineContent]] = {}

    async def read(
        self, keys: Sequence[str], before: str | None, count: int
    ) -> list[TimelineSlice | None]:
        names = [KEY_PREFIX + k for k in keys]
        return await self._calls.call(
            "timeline_read", lambda: self.backend.read(names, before, count, self.ttl)
        )

    async def build(
        self,
        key: str,
        load: Callable[[], Awaitable[TimelineContent]],
        budget: float,
    ) -> TimelineContent | None:
        """Load a missing timeline and store it; None if that takes over ``budget``.

        One build per timeline at a time in this process; a build that misses
        the budget goes on in the background and stores its result, so the
        next read finds it. Errors of ``load`` (the database) are raised.
        """
        task = self._builds.get(key)
        if task is None:
            task = asyncio.create_task(self._build(key, load), name="petpal-timeline")
            self._builds[key] = task
            task.add_done_callback(functools.partial(self._build_done, key))
        # asyncio.wait, not wait_for: running out of budget must not cancel
        # the build (a task cancelled inside a database call may hang).
        done, _ = await asyncio.wait({task}, timeout=budget)
        return task.result() if done else None

    async def _build(
        self, key: str, load: Callable[[], Awaitable[TimelineContent]]
    ) -> TimelineContent:
        name = KEY_PREFIX + key
        token = "~build:" + secrets.token_hex(8)
        try:
            await self._calls.call(
                "timeline_build",
                lambda: self.backend.begin_build(name, token, BUILD_SECONDS),
            )
        except CacheBackendError:
            return await load()  # served this once, not stored
        content = await load()
        # If the store fails now, this was served once; the next read builds.
        with contextlib.suppress(CacheBackendError):
            await self._calls.call(
                "timeline_build",
                lambda: self.backend.finish_build(
                    name, token, content, self.cap, self.slack, self.ttl
                ),
            )
        return content

    def _build_done(self, key: str, task: asyncio.Task[TimelineContent]) -> None:
        if self._builds.get(key) is task:
            del self._builds[key]
        if not task.cancelled() and task.exception() is not None:
            # The reader that waited for it raised it; one that gave up on
            # the budget did not, so it is recorded here.
            log.warning("timeline.build_failed", error=repr(task.exception()))

    async def add(
        self, keys: Sequence[str], ids: Sequence[str] = (), links: Sequence[str] = ()
    ) -> list[str]:
        """Add ``ids`` and ``links`` to those timelines that exist; returns them.

        The backend's ``add_batch`` timelines per call, ``ADDS_IN_FLIGHT``
        calls at a time. Should one fail, the others still finish before
        this raises: each failed call owes its timelines a deletion, and none
        is left running behind the caller's back.
        """
        names = [KEY_PREFIX + k for k in keys]
        size = self.backend.add_batch
        if size is None or len(names) <= size:
            added = await self._add(names, ids, links)
        else:
            slots = asyncio.Semaphore(ADDS_IN_FLIGHT)

            async def one(batch: list[str]) -> list[str]:
                async with slots:
                    return await self._add(batch, ids, links)

            results = await asyncio.gather(
                *(one(names[i : i + size]) for i in range(0, len(names), size)),
                return_exceptions=True,
            )
            added = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                added.extend(result)
        return [name.removeprefix(KEY_PREFIX) for name in added]

    async def _add(
        self, names: list[str], ids: Sequence[str], links: Sequence[str]
    ) -> list[str]:
        if not names:
            return []
        return await self._calls.call(
            "timeline_add",
            lambda: self.backend.add(names, ids, links, self.cap, self.slack),
            owe=names,
        )

    async def remove(self, keys: Sequence[str], ids: Sequence[str]) -> None:
        if keys and ids:
            names = [KEY_PREFIX + k for k in keys]
            await self._calls.call(
                "timeline_remove", lambda: self.backend.remove(names, ids), owe=names
            )

    async def unlink(self, key: str, ids: Sequence[str], link: str) -> bool:
        """Take one source's ``ids`` and ``link`` out of timeline ``key`` (an
        unfollow); True if it was ready and kept, and the caller should
        check that the source is still to be left out.

        A timeline being built is deleted instead, like ``forget``: its
        build may have read the source before the change.
        """
        name = KEY_PREFIX + key
        return await self._calls.call(
            "timeline_remove",
            lambda: self.backend.unlink(name, ids, link),
            owe=[name],
        )

    async def forget(self, *keys: str) -> None:
        """Delete timelines (and builds in progress): the next read rebuilds."""
        if keys:
            names = [KEY_PREFIX + k for k in keys]
            await self._calls.call(
                "timeline_delete", lambda: self.backend.delete(names), owe=names
            )

    def owe_deletion(self, keys: Iterable[str]) -> None:
        """Delete these timelines once the store answers again.

        For a job that failed part way: the timelines it may have missed
        are rebuilt rather than served without its change until it retries.
        """
        self._calls.owe(KEY_PREFIX + k for k in keys)

    async def has_mark(self, key: str) -> bool:
        return await self._calls.call(
            "timeline_mark", lambda: self.backend.has_mark(KEY_PREFIX + key)
        )

    async def set_mark(self, key: str) -> None:
        """Set a flag that lives as long as an unread timeline; ``forget``
        removes it."""
        await self._calls.call(
            "timeline_mark", lambda: self.backend.set_mark(KEY_PREFIX + key, self.ttl)
        )

    async def wait_idle(self) -> None:
        """Wait for the builds running in the background (tests use this)."""
        while self._builds:
            await asyncio.wait(list(self._builds.values()))

    async def clear(self) -> None:
        self._calls.forgive()
        await self.backend.clear()

    async def close(self, grace_seconds: float = 5.0) -> None:
        builds = list(self._builds.values())
        if builds:
            _, late = await asyncio.wait(builds, timeout=grace_seconds)
            for task in late:
                task.cancel()
        await self._calls.close()
        await self.backend.close()
