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


# --- a writer that knows its new values (mark_for_write / store_after_write) ---


async def _never(value: bytes) -> bytes:
    raise AssertionError(f"read {value!r} again instead of using the cache")


async def test_a_write_stores_what_it_knows_where_its_mark_still_is() -> None:
    cache = Cache(InProcessBackend())
    assert await cache.get_or_load("k:1", lambda: _value(b"old")) == b"old"

    marks = await cache.mark_for_write("k:1")
    # The mark is a miss: nobody is served the old value meanwhile.
    assert await cache.backend.get("k:1") not in (None, b"old")
    await cache.store_after_write(marks, {"k:1": b"new"})

    assert await cache.get_or_load("k:1", lambda: _never(b"k:1")) == b"new"


async def test_a_write_marked_after_ours_wins() -> None:
    # Two writers of one row, in two processes (two caches on one backend):
    # the second marks the key after the first did, and commits after it.
    # Whichever order their stores land in, the first one's (older) value is
    # never what stays.
    for second_stores_first in (True, False):
        backend = InProcessBackend()
        cache, other = Cache(backend), Cache(backend)
        first = await cache.mark_for_write("k:1")
        second = await other.mark_for_write("k:1")
        stores = [
            cache.store_after_write(first, {"k:1": b"first"}),
            other.store_after_write(second, {"k:1": b"second"}),
        ]
        if second_stores_first:
            stores.reverse()
        for store in stores:
            await store
        assert await cache.get_or_load("k:1", lambda: _value(b"db")) in (
            b"second",
            b"db",
        )


async def test_a_plain_invalidation_after_the_mark_wins() -> None:
    backend = InProcessBackend()
    cache, other = Cache(backend), Cache(backend)
    marks = await cache.mark_for_write("k:1")
    await other.invalidate("k:1")  # another process's write, after ours
    await cache.store_after_write(marks, {"k:1": b"ours"})
    assert await cache.get_or_load("k:1", lambda: _value(b"db")) == b"db"
    # In one process, the invalidation is known without asking the backend.
    cache = Cache(InProcessBackend())
    marks = await cache.mark_for_write("k:1")
    await cache.invalidate("k:1")
    await cache.store_after_write(marks, {"k:1": b"ours"})
    assert await cache.get_or_load("k:1", lambda: _value(b"db")) == b"db"


async def test_a_load_stored_between_the_mark_and_the_store_does_not_stay() -> None:
    # A reader missed on the mark and read the row before the write's commit:
    # it may store that, but the write's store then leaves a miss behind it.
    cache = Cache(InProcessBackend())
    marks = await cache.mark_for_write("k:1")
    assert await cache.get_or_load("k:1", lambda: _value(b"before")) == b"before"
    await cache.store_after_write(marks, {"k:1": b"after"})
    assert await cache.get_or_load("k:1", lambda: _value(b"db")) == b"db"


async def _value(value: bytes) -> bytes:
    return value
