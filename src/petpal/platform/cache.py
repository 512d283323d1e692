"""Cache-aside with explicit invalidation.

The backend is a byte store: in-process when embedded, Redis when
``PETPAL_REDIS_URL`` is set (see ``redis_cache``). ``Cache.get_or_load`` adds
the rules from DESIGN.md on top of it: TTLs with jitter so keys written
together do not expire together, one loader per missing key so a cold key does
not stampede the database, and a cached "not found" so lookups of missing ids
do not reach it either.

The cache is never a reason for a request to fail. A backend that errs or
times out makes a read a miss answered by the loader, and is then bypassed for
a moment so that only one request per interval waits for its timeout. An
invalidation that cannot reach the backend is kept and retried before this
process reads from the backend again, so a value that a write replaced is not
served once the backend is back. The other processes read that backend
meanwhile, and may reach it when this one cannot (its own connection lost,
found by a trial: another process served a deleted post and an edit's old
caption for as long as the first was cut off): so an invalidation owed after
a write has committed is also handed to them (``hand_over``, a job through
the outbox in distributed mode), and whichever reaches the backend first
delivers it.

Several processes share one Redis, so a load in one can race a write in
another: process A misses, reads the old row, process B commits and
invalidates, then A stores what it read. Invalidation therefore leaves a
tombstone (a unique marker, kept for ``TOMBSTONE_TTL``) instead of deleting
the key, and a loader stores its value only if the key still holds what its
miss saw: nothing, or the same tombstone. The check and the store are one
atomic step in the backend, so a write that lands during a load always wins.

A writer that will know the new values itself (a like knows the post's
counts from its own ``UPDATE ... RETURNING``) need not leave a tombstone
and read the row again after its commit. It marks the keys *before* its
transaction (``mark_for_write``: a tombstone it remembers) and, after the
commit, stores what it knows in one round trip (``store_after_write``):
each key gets the value if it still holds the writer's own tombstone, and a
fresh tombstone otherwise. The value is safe to store in the first case:
every other write to the same rows either marks the key before its commit
(a tombstone of its own would be there instead) or invalidates it after
its commit (and then lands after this store, or replaced the mark before
it). Its values must be at least as new as the writer's commit: read under
the row lock the write holds until it commits, as ``RETURNING`` is.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from prometheus_client import Counter, Gauge

T = TypeVar("T")
log = structlog.get_logger(__name__)

CACHE_REQUESTS = Counter(
    "petpal_cache_requests_total",
    "Cache look-ups by key family and outcome",
    ["family", "outcome"],
)
CACHE_BACKEND_ERRORS = Counter(
    "petpal_cache_backend_errors_total",
    "Cache backend calls that failed or timed out, by operation",
    ["operation"],
)
CACHE_OWED_INVALIDATIONS = Gauge(
    "petpal_cache_owed_invalidations",
    "Invalidations waiting for the cache backend to answer again",
    multiprocess_mode="livesum",  # each process owes its own
)

# Stored for a key whose loader found nothing; never a valid serialized value.
_MISSING_MARK = b"\x00petpal:missing"
# Left by an invalidation (plus a unique token); read as a miss.
_TOMBSTONE = b"\x00petpal:invalidated:"
# Longer than any load can take (statement timeouts are far shorter), so a
# tombstone outlives every load that started before its write.
TOMBSTONE_TTL = 120.0


def is_tombstone(value: bytes | None) -> bool:
    return value is not None and value.startswith(_TOMBSTONE)


# Keys whose invalidation is still owed to the backend, at most; past this the
# whole namespace is cleared instead once the backend answers again.
_MAX_OWED_INVALIDATIONS = 100_000


class CacheBackendError(Exception):
    """The backend did not answer, or answered with an error.

    Backends raise only this, so that the cache can tell "the cache is down"
    (served from the loader) from a bug (raised).
    """


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The keys that are present, in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...
    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_seconds: float, seen: bytes | None
    ) -> None:
        """Atomically: store ``value`` if ``key`` holds ``seen`` (None: nothing)."""
        ...

    async def set_if_marked(
        self, key: str, value: bytes, ttl_seconds: float, mark: bytes, other: bytes
    ) -> None:
        """Atomically: store ``value`` if ``key`` holds ``mark``; else store
        ``other`` (a tombstone) for ``TOMBSTONE_TTL``."""
        ...

    async def delete(self, *keys: str) -> None: ...
    async def clear(self) -> None:
        """Delete every key of this cache (its namespace), nothing else."""
        ...

    async def close(self) -> None: ...


class InProcessBackend:
    """A bounded LRU of byte values with per-key expiry, for one process."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            value = await self.get(key)
            if value is not None:
                found[key] = value
        return found

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._data[key] = (time.monotonic() + ttl_seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_seconds: float, seen: bytes | None
    ) -> None:
        current = await self.get(key)
        if current is None or current == seen:
            await self.set(key, value, ttl_seconds)

    async def set_if_marked(
        self, key: str, value: bytes, ttl_seconds: float, mark: bytes, other: bytes
    ) -> None:
        if await self.get(key) == mark:
            await self.set(key, value, ttl_seconds)
        else:
            await self.set(key, other, TOMBSTONE_TTL)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def clear(self) -> None:
        self._data.clear()

    async def close(self) -> None:
        self._data.clear()


class Cache:
    def __init__(
        self,
        backend: CacheBackend,
        default_ttl: float = 300.0,
        *,
        bypass_after_error: float = 1.0,
    ) -> None:
        self.backend = backend
        self.default_ttl = default_ttl
        self.enabled = True
        # Takes the keys of an invalidation owed after a commit to the other
        # processes of this backend (Services.build sets it when they share
        # one); best effort: it may fail as the backend did.
        self.hand_over: Callable[[list[str]], Awaitable[None]] | None = None
        self._handing_over: set[asyncio.Task[None]] = set()
        self._loading: dict[str, asyncio.Future[bytes | None]] = {}
        # Bumped by every invalidation: a load that started before a write must
        # not store what it read once the write has invalidated the key.
        self._generation: dict[str, int] = {}
        # The backend is skipped until this monotonic time after it failed.
        self._bypass_after_error = bypass_after_error
        self._bypass_until = 0.0
        # Invalidations the backend has not received yet (it was down).
        self._owed: set[str] = set()
        self._owe_everything = False
        self._settle_task: asyncio.Task[None] | None = None
        self._settling = asyncio.Lock()

    def _ttl(self, ttl: float | None) -> float:
        base = self.default_ttl if ttl is None else ttl
        return base * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not secrecy

    async def get_or_load(
        self,
        key: str,
        load: Callable[[], Awaitable[bytes | None]],
        *,
        ttl: float | None = None,
        missing_ttl: float = 30.0,
    ) -> bytes | None:
        """The cached bytes for ``key``, or what ``load`` returns (then cached).

        ``load`` returns ``None`` for "does not exist", which is cached for
        ``missing_ttl`` seconds.
        """
        family = key.split(":", 1)[0]
        if not self.enabled:
            return await load()
        seen: bytes | None = None
        if await self._backend_usable():
            try:
                cached = await self.backend.get(key)
            except CacheBackendError as exc:
                self.backend_failed("get", exc)
            else:
                if is_tombstone(cached):
                    seen = cached
                elif cached is not None:
                    _lookups(family, "hit").inc()
                    return None if cached == _MISSING_MARK else cached
        _lookups(family, "miss").inc()

        in_flight = self._loading.get(key)
        if in_flight is not None:
            return await asyncio.shield(in_flight)
        future: asyncio.Future[bytes | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[key] = future
        generation = self._generation.get(key, 0)
        try:
            value = await load()
            # Stored before the waiters are released, so that a reader who
            # comes after them finds the value instead of loading it again.
            await self._store(key, generation, value, ttl, missing_ttl, seen)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            # Waiters see the error; nobody else needs to retrieve it.
            future.exception()
            raise
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]
            if len(self._generation) > 100_000:
                self._generation.clear()

    async def get_or_load_many(
        self,
        keys: Sequence[str],
        load_many: Callable[[list[str]], Awaitable[Mapping[str, bytes | None]]],
        *,
        ttl: float | None = None,
        missing_ttl: float = 30.0,
    ) -> dict[str, bytes | None]:
        """Like ``get_or_load`` for several keys: one backend round trip for
        the look-up and one ``load_many`` call for the keys it misses.

        ``load_many`` gets the missing keys and returns what it found; a key it
        leaves out (or maps to ``None``) does not exist, and that is cached.
        Keys another caller is already loading are awaited, not loaded twice.
        """
        wanted = list(dict.fromkeys(keys))
        if not self.enabled:
            loaded = await load_many(wanted)
            return {key: loaded.get(key) for key in wanted}
        results: dict[str, bytes | None] = {}
        seen: dict[str, bytes] = {}
        if wanted and await self._backend_usable():
            try:
                found = await self.backend.get_many(wanted)
            except CacheBackendError as exc:
                self.backend_failed("get", exc)
            else:
                for key, cached in found.items():
                    if is_tombstone(cached):
                        seen[key] = cached
                        continue
                    results[key] = None if cached == _MISSING_MARK else cached
        missing = [key for key in wanted if key not in results]
        _count_lookups(results, "hit")
        _count_lookups(missing, "miss")

        joined = {key: self._loading[key] for key in missing if key in self._loading}
        mine = [key for key in missing if key not in joined]
        if mine:
            results.update(
                await self._load_batch(mine, load_many, ttl, missing_ttl, seen)
            )
        for key, in_flight in joined.items():
            results[key] = await asyncio.shield(in_flight)
        return {key: results[key] for key in wanted}

    async def _load_batch(
        self,
        keys: list[str],
        load_many: Callable[[list[str]], Awaitable[Mapping[str, bytes | None]]],
        ttl: float | None,
        missing_ttl: float,
        seen: Mapping[str, bytes],
    ) -> dict[str, bytes | None]:
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[bytes | None]] = {
            key: loop.create_future() for key in keys
        }
        self._loading.update(futures)
        generations = {key: self._generation.get(key, 0) for key in keys}
        try:
            loaded = await load_many(keys)
            values = {key: loaded.get(key) for key in keys}
            await asyncio.gather(
                *(
                    self._store(
                        key,
                        generations[key],
                        values[key],
                        ttl,
                        missing_ttl,
                        seen.get(key),
                    )
                    for key in keys
                )
            )
            for key, future in futures.items():
                future.set_result(values[key])
            return values
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()
            raise
        finally:
            for key, future in futures.items():
                if self._loading.get(key) is future:
                    del self._loading[key]

    async def _store(
        self,
        key: str,
        generation: int,
        value: bytes | None,
        ttl: float | None,
        missing_ttl: float,
        seen: bytes | None,
    ) -> None:
        """Store a loaded value unless a write invalidated the key meanwhile.

        This process knows its own invalidations (the generation); the
        backend's check against ``seen`` catches those of other processes.
        """
        if self._generation.get(key, 0) != generation:
            return  # invalidated while loading: serve, but do not store
        if not await self._backend_usable():
            return
        stored, lifetime = (
            (_MISSING_MARK, missing_ttl) if value is None else (value, self._ttl(ttl))
        )
        try:
            await self.backend.set_if_unchanged(key, stored, lifetime, seen)
        except CacheBackendError as exc:
            self.backend_failed("set", exc)
            return
        if self._generation.get(key, 0) != generation:
            # An invalidation ran while the value was on its way and may have
            # reached the backend first (another connection): take it back.
            await self._tombstone_or_owe([key])

    async def invalidate(self, *keys: str) -> None:
        """Forget ``keys`` after a write changed what they hold.

        Never raises for a backend failure: the write has committed, and the
        deletion is owed to the backend until it answers again.
        """
        for key in keys:
            self._forget_loads(key)
        if keys:
            await self._tombstone_or_owe(list(keys))

    def _forget_loads(self, key: str) -> None:
        """Keep loads of ``key`` in flight from storing or being joined."""
        self._generation[key] = self._generation.get(key, 0) + 1
        pending = self._loading.pop(key, None)
        if pending is not None and not pending.done():
            # Later readers must not join a load that may predate the write.
            pending.add_done_callback(_consume)

    async def mark_for_write(self, *keys: str) -> WriteMarks:
        """Invalidate ``keys`` before a write whose new values the writer
        will know; :meth:`store_after_write` then stores them (see the module).

        Never raises for a backend failure: the keys are then owed an
        invalidation, as by :meth:`invalidate`, and the store after the
        write only invalidates them again.
        """
        marks = {key: _new_tombstone() for key in keys}
        for key in keys:
            self._forget_loads(key)
        generations = {key: self._generation[key] for key in keys}
        if keys and await self._backend_usable():
            try:
                await self._set_tombstones(marks)
            except CacheBackendError as exc:
                self.backend_failed("delete", exc)
            else:
                return WriteMarks(marks, generations)
        self._owe(keys)
        return WriteMarks({}, generations)

    async def store_after_write(
        self,
        marks: WriteMarks,
        values: Mapping[str, bytes],
        *,
        ttl: float | None = None,
    ) -> None:
        """Store the values a committed write knows under the keys it marked,
        in one round trip; a key written by another since its mark is
        invalidated instead. Never raises for a backend failure."""
        stale = [
            key
            for key in values
            if key not in marks.tombstones
            or self._generation.get(key, 0) != marks.generations[key]
        ]
        fresh = [key for key in values if key not in stale]
        for key in values:
            self._forget_loads(key)
        if fresh and await self._backend_usable():
            try:
                await asyncio.gather(
                    *(
                        self.backend.set_if_marked(
                            key,
                            values[key],
                            self._ttl(ttl),
                            marks.tombstones[key],
                            _new_tombstone(),
                        )
                        for key in fresh
                    ),
                    self._set_tombstones({key: _new_tombstone() for key in stale}),
                )
            except CacheBackendError as exc:
                self.backend_failed("set", exc)
                self._owe(values, committed=True)
            return
        if stale or fresh:
            await self._tombstone_or_owe([*stale, *fresh])

    async def clear(self) -> None:
        self._owed.clear()
        self._owe_everything = False
        await self.backend.clear()

    async def close(self) -> None:
        if self._handing_over:
            await asyncio.wait(self._handing_over, timeout=5.0)
        # A last delivery, as for the stores beside the cache (store_calls).
        await self._backend_usable()
        if self._owed or self._owe_everything:
            log.warning("cache.invalidations_undelivered", keys=len(self._owed))
        if self._settle_task is not None:
            self._settle_task.cancel()
            await asyncio.gather(self._settle_task, return_exceptions=True)
        await self.backend.close()

    async def _tombstone(self, keys: list[str]) -> None:
        """Replace each key's value by a tombstone of its own."""
        await self._set_tombstones({key: _new_tombstone() for key in keys})

    async def _set_tombstones(self, tombstones: Mapping[str, bytes]) -> None:
        await asyncio.gather(
            *(
                self.backend.set(key, tombstone, TOMBSTONE_TTL)
                for key, tombstone in tombstones.items()
            )
        )

    async def _tombstone_or_owe(self, keys: list[str]) -> None:
        if await self._backend_usable():
            try:
                await self._tombstone(keys)
            except CacheBackendError as exc:
                self.backend_failed("delete", exc)
                log.warning(
                    "cache.invalidate_failed", keys=len(keys), error=type(exc).__name__
                )
            else:
                return
        self._owe(keys, committed=True)

    def _owe(self, keys: Iterable[str], *, committed: bool = False) -> None:
        """Keep ``keys`` owed an invalidation; ``committed``: their write has
        committed, and the other processes are told too (``hand_over``). A
        mark made before a write is not handed over: delivered before the
        commit, it would let another process cache the old row again; the
        store after the commit owes (and hands over) the keys anew."""
        keys = list(keys)
        if committed and keys and self.hand_over is not None:
            task = asyncio.get_running_loop().create_task(self._hand_over(keys))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)
        self._owed.update(keys)
        if len(self._owed) > _MAX_OWED_INVALIDATIONS:
            self._owed.clear()
            self._owe_everything = True
        CACHE_OWED_INVALIDATIONS.set(len(self._owed))
        if self._settle_task is None or self._settle_task.done():
            self._settle_task = asyncio.get_running_loop().create_task(
                self._settle_debts(), name="petpal-cache-settle"
            )

    async def _hand_over(self, keys: list[str]) -> None:
        assert self.hand_over is not None
        try:
            await self.hand_over(keys)
        except Exception as exc:  # the keys stay owed here all the same
            log.warning(
                "cache.hand_over_failed", keys=len(keys), error=type(exc).__name__
            )

    async def deliver(self, *keys: str) -> None:
        """Invalidate ``keys`` for another process that could not; raise
        ``CacheBackendError`` if the backend cannot be reached either (the
        job that calls this is then tried again)."""
        for key in keys:
            self._forget_loads(key)
        if not await self._backend_usable():
            raise CacheBackendError("bypassed after an error")
        try:
            await self._tombstone(list(keys))
        except CacheBackendError as exc:
            self.backend_failed("delete", exc)
            raise

    async def _settle_debts(self) -> None:
        """Deliver owed invalidations even if this process reads nothing."""
        while self._owed or self._owe_everything:
            await asyncio.sleep(max(0.05, self._bypass_until - time.monotonic()))
            await self._backend_usable()

    async def _backend_usable(self) -> bool:
        """False while the backend is bypassed after an error.

        Delivers owed invalidations first: nothing is read from the backend
        while it may still hold a value that a write replaced.
        """
        if time.monotonic() < self._bypass_until:
            return False
        if not (self._owed or self._owe_everything):
            return True
        async with self._settling:
            if time.monotonic() < self._bypass_until:
                return False  # the delivery we waited for failed
            owed, everything = list(self._owed), self._owe_everything
            try:
                if everything:
                    await self.backend.clear()
                elif owed:
                    await self._tombstone(owed)
            except CacheBackendError as exc:
                self.backend_failed("delete", exc)
                return False
            self._owed.difference_update(owed)
            self._owe_everything = self._owe_everything and not everything
            CACHE_OWED_INVALIDATIONS.set(len(self._owed))
            if owed or everything:
                log.info("cache.invalidations_delivered", keys=len(owed))
        return True

    @property
    def bypassed(self) -> bool:
        """True while the backend is skipped after an error."""
        return time.monotonic() < self._bypass_until

    def backend_failed(self, operation: str, exc: CacheBackendError) -> None:
        """Count a failure and bypass the backend for a moment.

        Public for the other clients of the same server (the timelines), so
        that the first of them to meet a hung Redis spares the rest the wait.
        """
        CACHE_BACKEND_ERRORS.labels(operation).inc()
        if time.monotonic() >= self._bypass_until:
            log.warning(
                "cache.backend_bypassed",
                operation=operation,
                error=str(exc),
                seconds=self._bypass_after_error,
            )
        self._bypass_until = time.monotonic() + self._bypass_after_error


@dataclass(frozen=True)
class WriteMarks:
    """What :meth:`Cache.mark_for_write` left: each key's tombstone (none
    when the backend failed) and the key's generation in this process."""

    tombstones: Mapping[str, bytes]
    generations: Mapping[str, int]


def _new_tombstone() -> bytes:
    return _TOMBSTONE + os.urandom(8).hex().encode()


def _count_lookups(keys: Iterable[str], outcome: str) -> None:
    """Count look-ups by key family: one counter update a family, not a key."""
    families = collections.Counter(key.partition(":")[0] for key in keys)
    for family, n in families.items():
        _lookups(family, outcome).inc(n)


# The counter of each (family, outcome), looked up once: ``labels`` takes a
# lock and builds its key on every call. Families are this code's key
# prefixes, a few dozen at most.
_LOOKUP_COUNTERS: dict[tuple[str, str], Counter] = {}


def _lookups(family: str, outcome: str) -> Counter:
    counter = _LOOKUP_COUNTERS.get((family, outcome))
    if counter is None:
        counter = CACHE_REQUESTS.labels(family, outcome)
        _LOOKUP_COUNTERS[(family, outcome)] = counter
    return counter


def _consume(future: asyncio.Future[bytes | None]) -> None:
    if not future.cancelled():
        future.exception()
