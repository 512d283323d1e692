"""The cache never fails a request: a broken backend means misses, not errors.

The backend here is the in-process one with a switch that makes it fail the
way a Redis that is down does (``CacheBackendError``); the Redis backend
itself is tested against real servers in test_redis_cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import REGISTRY

from petpal.platform.cache import (
    Cache,
    CacheBackendError,
    InProcessBackend,
    is_tombstone,
)
from petpal.platform.store_calls import StoreCalls


class FlakyBackend(InProcessBackend):
    """An in-process backend that can be switched off, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: list[str] = []

    def _check(self, operation: str) -> None:
        self.calls.append(operation)
        if self.down:
            raise CacheBackendError(f"{operation}: backend is down")

    async def get(self, key: str) -> bytes | None:
        self._check("get")
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        self._check("get_many")
        return await super().get_many(keys)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._check("set")
        await super().set(key, value, ttl_seconds)

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_seconds: float, seen: bytes | None
    ) -> None:
        self._check("set")
        current = await InProcessBackend.get(self, key)
        if current is None or current == seen:
            await InProcessBackend.set(self, key, value, ttl_seconds)

    async def delete(self, *keys: str) -> None:
        self._check("delete")
        await super().delete(*keys)


def _errors(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "petpal_cache_backend_errors_total", {"operation": operation}
    )
    return value or 0.0


async def test_a_backend_error_is_a_miss_answered_by_the_loader() -> None:
    backend = FlakyBackend()
    cache = Cache(backend, bypass_after_error=60)
    backend.down = True
    before = _errors("get")

    async def load() -> bytes:
        return b"from the database"

    assert await cache.get_or_load("profile:1", load) == b"from the database"
    assert _errors("get") == before + 1
    backend.down = False
    # Bypassed for a while after the error: nothing stored, nothing asked.
    assert await cache.get_or_load("profile:1", load) == b"from the database"
    assert backend.calls == ["get"]
    assert await backend.get("profile:1") is None


async def test_only_one_call_per_bypass_interval_waits_for_a_dead_backend() -> None:
    backend = FlakyBackend()
    cache = Cache(backend, bypass_after_error=0.2)
    backend.down = True

    async def load() -> bytes:
        return b"v"

    for _ in range(10):
        await cache.get_or_load("k:1", load)
    assert backend.calls == ["get"]

    await asyncio.sleep(0.25)
    backend.down = False
    await cache.get_or_load("k:1", load)
    await cache.get_or_load("k:1", load)
    assert backend.calls == ["get", "get", "set", "get"]  # back in use: a hit


async def test_a_failed_invalidation_is_counted_and_delivered_later() -> None:
    backend = FlakyBackend()
    cache = Cache(backend, bypass_after_error=0.1)

    async def old() -> bytes:
        return b"old"

    async def new() -> bytes:
        return b"new"

    await cache.get_or_load("pet:1", old)
    backend.down = True
    before = _errors("delete")
    await cache.invalidate("pet:1")  # a write committed; must not raise
    assert _errors("delete") == before + 1

    # While the backend is down, reads come from the loader: fresh.
    assert await cache.get_or_load("pet:1", new) == b"new"
    backend.down = False
    await asyncio.sleep(0.15)
    # Back up: the owed deletion goes first, so the old value is never served.
    assert await cache.get_or_load("pet:1", new) == b"new"
    assert await backend.get("pet:1") == b"new"


async def test_owed_invalidations_are_delivered_even_without_reads() -> None:
    backend = FlakyBackend()
    cache = Cache(backend, bypass_after_error=0.05)

    async def old() -> bytes:
        return b"old"

    await cache.get_or_load("pet:2", old)
    backend.down = True
    await cache.invalidate("pet:2")
    backend.down = False
    for _ in range(50):
        if await backend.get("pet:2") != b"old":
            break
        await asyncio.sleep(0.02)
    assert is_tombstone(await backend.get("pet:2"))
    await cache.close()


class FlakyStore:
    """A store beside the cache (as timelines are) that can be switched off."""

    def __init__(self) -> None:
        self.down = False
        self.keys = {"timeline:1"}

    async def delete(self, keys: Sequence[str]) -> None:
        if self.down:
            raise CacheBackendError("delete: store is down")
        self.keys.difference_update(keys)

    async def clear(self) -> None:
        self.keys.clear()


async def test_owed_deletions_are_delivered_once_more_at_close() -> None:
    """Found by a trial: a worker's child process, whose event loop runs only
    while it runs a job, was stopped after Redis came back and said its
    owed deletions were undelivered. Closing tries a last delivery."""
    backend, store = FlakyBackend(), FlakyStore()
    cache = Cache(backend, bypass_after_error=0.01)
    calls = StoreCalls(store, cache, store="timeline")
    backend.down = store.down = True

    async def fail() -> None:
        raise CacheBackendError("add: store is down")

    with pytest.raises(CacheBackendError):
        await calls.call("add", fail, owe=["timeline:1"])
    await cache.invalidate("post:1")
    for task in asyncio.all_tasks():  # as if the loop never ran them again
        if task.get_name().startswith("petpal-"):
            task.cancel()
    backend.down = store.down = False
    await asyncio.sleep(0.05)  # past the bypass
    before = len(backend.calls)

    await calls.close()
    await cache.close()
    assert store.keys == set()  # the timeline's deletion
    assert "set" in backend.calls[before:]  # post:1's tombstone


async def test_a_store_that_races_an_invalidation_is_taken_back() -> None:
    class SlowSet(InProcessBackend):
        async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
            await asyncio.sleep(0.02)  # on the wire while the write commits
            await super().set(key, value, ttl_seconds)

    backend = SlowSet()
    cache = Cache(backend)

    async def old() -> bytes:
        return b"old"

    reader = asyncio.create_task(cache.get_or_load("post:1", old))
    await asyncio.sleep(0.01)  # the load is done, its store is in flight
    await cache.invalidate("post:1")
    assert await reader == b"old"
    assert is_tombstone(await backend.get("post:1"))


async def test_get_or_load_many_makes_one_lookup_and_one_load() -> None:
    backend = FlakyBackend()
    cache = Cache(backend)
    await backend.set("post:1", b"one", 60)
    loads: list[list[str]] = []

    async def load_many(keys: list[str]) -> Mapping[str, bytes | None]:
        loads.append(keys)
        return {key: key.encode() for key in keys if key != "post:404"}

    found = await cache.get_or_load_many(
        ["post:1", "post:2", "post:404", "post:2"], load_many
    )
    assert found == {"post:1": b"one", "post:2": b"post:2", "post:404": None}
    assert loads == [["post:2", "post:404"]]
    assert backend.calls.count("get_many") == 1

    again = await cache.get_or_load_many(["post:2", "post:404"], load_many)
    assert again == {"post:2": b"post:2", "post:404": None}
    assert len(loads) == 1  # "not found" was cached too


async def test_get_or_load_many_joins_loads_already_running() -> None:
    cache = Cache(InProcessBackend())
    release = asyncio.Event()
    single_loads = 0

    async def slow_single() -> bytes:
        nonlocal single_loads
        single_loads += 1
        await release.wait()
        return b"single"

    async def load_many(keys: list[str]) -> Mapping[str, bytes | None]:
        return dict.fromkeys(keys, b"batch")

    running = asyncio.create_task(cache.get_or_load("post:7", slow_single))
    await asyncio.sleep(0)
    batch = asyncio.create_task(cache.get_or_load_many(["post:7", "post:8"], load_many))
    await asyncio.sleep(0.01)
    release.set()
    assert await batch == {"post:7": b"single", "post:8": b"batch"}
    assert await running == b"single"
    assert single_loads == 1


async def test_get_or_load_many_survives_a_dead_backend() -> None:
    backend = FlakyBackend()
    backend.down = True
    cache = Cache(backend)

    async def load_many(keys: list[str]) -> Mapping[str, bytes | None]:
        return dict.fromkeys(keys, b"db")

    assert await cache.get_or_load_many(["a:1", "a:2"], load_many) == {
        "a:1": b"db",
        "a:2": b"db",
    }


async def test_a_write_marked_while_the_backend_was_down_only_invalidates() -> None:
    backend = FlakyBackend()
    cache = Cache(backend, bypass_after_error=0)
    await backend.set("k:1", b"old", 60)
    backend.down = True
    marks = await cache.mark_for_write("k:1")  # owed, not raised
    backend.down = False
    await cache.store_after_write(marks, {"k:1": b"new"})

    async def load() -> bytes:
        return b"db"

    # The value was not stored over a key the write never marked.
    assert await cache.get_or_load("k:1", load) == b"db"
