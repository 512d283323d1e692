from __future__ import annotations

import asyncio

from petpal.platform.cache import Cache, InProcessBackend


async def test_one_loader_per_missing_key() -> None:
    cache = Cache(InProcessBackend())
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return b"value"

    results = await asyncio.gather(*(cache.get_or_load("k:1", load) for _ in range(50)))
    assert results == [b"value"] * 50
    assert calls == 1


async def test_not_found_is_cached() -> None:
    cache = Cache(InProcessBackend())
    calls = 0

    async def load() -> bytes | None:
        nonlocal calls
        calls += 1
        return None

    assert await cache.get_or_load("k:missing", load) is None
    assert await cache.get_or_load("k:missing", load) is None
    assert calls == 1


async def test_a_load_that_straddles_an_invalidation_is_not_stored() -> None:
    cache = Cache(InProcessBackend())
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_read() -> bytes:
        started.set()
        await release.wait()
        return b"old"

    reader = asyncio.create_task(cache.get_or_load("k:1", slow_old_read))
    await started.wait()
    await cache.invalidate("k:1")  # a write committed meanwhile
    release.set()
    assert await reader == b"old"

    async def fresh_read() -> bytes:
        return b"new"

    assert await cache.get_or_load("k:1", fresh_read) == b"new"


async def test_loader_errors_reach_every_waiter_and_are_not_cached() -> None:
    cache = Cache(InProcessBackend())

    async def broken() -> bytes:
        await asyncio.sleep(0.01)
        raise RuntimeError("db down")

    results = await asyncio.gather(
        *(cache.get_or_load("k:e", broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> bytes:
        return b"ok"

    assert await cache.get_or_load("k:e", ok) == b"ok"


async def test_entries_expire_and_the_lru_is_bounded() -> None:
    backend = InProcessBackend(max_entries=2)
    await backend.set("a", b"1", 0.0)
    assert await backend.get("a") is None
    await backend.set("a", b"1", 60)
    await backend.set("b", b"2", 60)
    await backend.get("a")
    await backend.set("c", b"3", 60)
    assert await backend.get("b") is None
    assert await backend.get("a") == b"1"
