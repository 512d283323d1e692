"""Cache-aside with explicit invalidation.

The backend is a byte store (in-process here; Redis in distributed mode).
``Cache.get_or_load`` adds the rules from DESIGN.md on top of it: TTLs with
jitter so keys written together do not expire together, one loader per
missing key so a cold key does not stampede the database, and a cached
"not found" so lookups of missing ids do not reach it either.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from prometheus_client import Counter

T = TypeVar("T")

CACHE_REQUESTS = Counter(
    "petpal_cache_requests_total",
    "Cache look-ups by key family and outcome",
    ["family", "outcome"],
)

# Stored for a key whose loader found nothing; never a valid serialized value.
_MISSING_MARK = b"\x00petpal:missing"


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def clear(self) -> None: ...


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

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._data[key] = (time.monotonic() + ttl_seconds, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def clear(self) -> None:
        self._data.clear()


class Cache:
    def __init__(self, backend: CacheBackend, default_ttl: float = 300.0) -> None:
        self.backend = backend
        self.default_ttl = default_ttl
        self._loading: dict[str, asyncio.Future[bytes | None]] = {}
        # Bumped by every invalidation: a load that started before a write must
        # not store what it read once the write has invalidated the key.
        self._generation: dict[str, int] = {}
        self.enabled = True

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
        cached = await self.backend.get(key)
        if cached is not None:
            CACHE_REQUESTS.labels(family, "hit").inc()
            return None if cached == _MISSING_MARK else cached
        CACHE_REQUESTS.labels(family, "miss").inc()

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
            if self._generation.get(key, 0) != generation:
                pass  # invalidated while loading: serve, but do not store
            elif value is None:
                await self.backend.set(key, _MISSING_MARK, missing_ttl)
            else:
                await self.backend.set(key, value, self._ttl(ttl))
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

    async def invalidate(self, *keys: str) -> None:
        for key in keys:
            self._generation[key] = self._generation.get(key, 0) + 1
            pending = self._loading.pop(key, None)
            if pending is not None and not pending.done():
                # Later readers must not join a load that may predate the write.
                pending.add_done_callback(_consume)
        if keys:
            await self.backend.delete(*keys)

    async def clear(self) -> None:
        await self.backend.clear()


def _consume(future: asyncio.Future[bytes | None]) -> None:
    if not future.cancelled():
        future.exception()
