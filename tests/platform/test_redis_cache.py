"""The Redis cache backend, on real servers.

The shared Redis of ``PETPAL_TEST_REDIS_URL`` serves the functional tests,
each under its own key prefix. The fault tests freeze Redis with SIGSTOP, so
they start a private redis-server of their own on a free loopback port (and
stop it by its pid); they are skipped where redis-server is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from petpal.platform.app import create_app
from petpal.platform.cache import Cache
from petpal.platform.redis_cache import RedisBackend
from petpal.platform.settings import Settings
from tests.conftest import (
    REDIS_PREFIX,
    TEST_REDIS_URL,
    delete_redis_keys,
    make_settings,
    requires_redis,
)
from tests.factories import a_user, drain_jobs
from tests.social.builders import a_photo, a_post, many_users


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """Settings for the shared test Redis, and the key prefix they use."""
    prefix = f"{REDIS_PREFIX}backend-{os.urandom(4).hex()}:"
    settings = make_settings(
        tmp_path, redis_url=TEST_REDIS_URL, cache_key_prefix=prefix
    )
    yield settings, prefix
    delete_redis_keys(TEST_REDIS_URL, prefix)


@requires_redis
async def test_values_round_trip_with_millisecond_ttls(
    shared_redis: tuple[Settings, str],
) -> None:
    backend = RedisBackend.from_settings(shared_redis[0])
    try:
        await backend.set("pet:1", b"\x00binary\xff", 60)
        await backend.set("pet:2", b"short-lived", 0.05)
        assert await backend.get("pet:1") == b"\x00binary\xff"
        assert await backend.get_many(["pet:1", "pet:2", "pet:3"]) == {
            "pet:1": b"\x00binary\xff",
            "pet:2": b"short-lived",
        }
        await asyncio.sleep(0.1)
        assert await backend.get("pet:2") is None
        await backend.delete("pet:1", "pet:9")
        assert await backend.get("pet:1") is None
    finally:
        await backend.close()


@requires_redis
async def test_a_cancelled_lookup_leaves_the_rest_of_its_batch_alone(
    shared_redis: tuple[Settings, str],
) -> None:
    """Look-ups of one turn share one MGET; cancelling one of them (its
    request timed out, its client left) must not cancel the batch."""
    backend = RedisBackend.from_settings(shared_redis[0])
    try:
        await backend.set("pet:1", b"one", 60)
        await backend.set("pet:2", b"two", 60)
        doomed = asyncio.ensure_future(backend.get("pet:1"))
        kept = asyncio.ensure_future(backend.get_many(["pet:1", "pet:2"]))
        alone = asyncio.ensure_future(backend.get("pet:2"))
        await asyncio.sleep(0)  # all three have joined the batch
        doomed.cancel()
        assert await kept == {"pet:1": b"one", "pet:2": b"two"}
        assert await alone == b"two"
        assert doomed.cancelled()
        # The next turn's batch is a new one, and works.
        assert await backend.get("pet:1") == b"one"
    finally:
        await backend.close()


@requires_redis
async def test_clear_deletes_only_its_own_prefix(
    shared_redis: tuple[Settings, str],
) -> None:
    settings, prefix = shared_redis
    mine = RedisBackend.from_settings(settings)
    # A neighbour whose prefix starts like ours, and one with a glob character.
    neighbour = RedisBackend.from_settings(
        settings.model_copy(update={"cache_key_prefix": prefix + "x*"})
    )
    lookalike = RedisBackend.from_settings(
        settings.model_copy(update={"cache_key_prefix": prefix[:-1] + "Z:"})
    )
    try:
        for backend in (mine, neighbour, lookalike):
            await backend.set("k:1", b"v", 60)
        await neighbour.clear()
        assert await neighbour.get("k:1") is None
        assert await mine.get("k:1") == b"v"  # "x*" was not a wildcard
        await mine.clear()
        assert await mine.get("k:1") is None
        assert await lookalike.get("k:1") == b"v"
        await lookalike.clear()
    finally:
        for backend in (mine, neighbour, lookalike):
            await backend.close()


# --- on a private Redis, to read its counters and to freeze it -----------------


@dataclass
class PrivateRedis:
    process: subprocess.Popen[bytes]
    url: str

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH")
    port = _free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--logfile",
            str(tmp_path / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_it_answers(url, process)
        yield PrivateRedis(process, url)
    finally:
        os.kill(process.pid, signal.SIGCONT)  # a stopped process ignores TERM
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_it_answers(url: str, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def _commandstats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_lookups_of_one_turn_share_one_round_trip(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    backend = RedisBackend.from_settings(
        make_settings(tmp_path, redis_url=private_redis.url)
    )
    cache = Cache(backend)
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return b"body"

    keys = [f"post:{i}" for i in range(50)]
    try:
        await backend.ping()
        before = _commandstats(private_redis.url)
        cold = await asyncio.gather(*(cache.get_or_load(k, load) for k in keys))
        warm = await asyncio.gather(*(cache.get_or_load(k, load) for k in keys))
    finally:
        await backend.close()
    after = _commandstats(private_redis.url)
    assert cold == warm == [b"body"] * 50
    assert loads == 50

    def delta(command: str) -> int:
        return after.get(command, 0) - before.get(command, 0)

    # One MGET per page of look-ups, never a GET per key; the 50 stores are
    # conditional (a script that reads the key and sets it, inside Redis).
    assert delta("mget") == 2
    assert delta("evalsha") == 50
    assert delta("get") == 50  # only those inside the stores
    assert delta("set") == 50


# Socket timeout 0.25 s plus the scheduling noise of a shared machine.
ONE_TIMEOUT = 0.25 + 0.45


async def test_a_frozen_redis_costs_one_timeout_and_serves_nothing_stale(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, redis_url=private_redis.url, cache_bypass_after_error_seconds=0.5
    )
    backend = RedisBackend.from_settings(settings)
    cache = Cache(backend, bypass_after_error=0.5)

    def answer(value: bytes) -> Callable[[], Awaitable[bytes]]:
        async def load() -> bytes:
            return value

        return load

    try:
        assert await cache.get_or_load("profile:1", answer(b"v1")) == b"v1"
        private_redis.freeze()

        started = time.monotonic()
        assert await cache.get_or_load("profile:1", answer(b"v2")) == b"v2"
        assert time.monotonic() - started < ONE_TIMEOUT
        # Bypassed now: further reads and a write's invalidation do not wait.
        started = time.monotonic()
        for _ in range(20):
            assert await cache.get_or_load("profile:1", answer(b"v2")) == b"v2"
        await cache.invalidate("profile:1")
        assert time.monotonic() - started < 0.2

        private_redis.thaw()
        await asyncio.sleep(0.6)
        # v1 is still in Redis unless the owed invalidation went first.
        assert await cache.get_or_load("profile:1", answer(b"v3")) == b"v3"
    finally:
        private_redis.thaw()
        await cache.close()


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_profile_reads_and_writes_go_on_while_redis_is_frozen(
    private_redis: PrivateRedis, settings: Settings
) -> None:
    on_private = settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "cache_key_prefix": "petpal-freeze:",
            "cache_bypass_after_error_seconds": 0.5,
        }
    )
    async with _serving(on_private) as client:
        alice, bob = await a_user(client), await a_user(client)
        profile = f"/api/v1/accounts/{alice.username}"
        warm = await client.get(profile)
        assert warm.json()["follower_count"] == 0

        private_redis.freeze()
        try:
            started = time.monotonic()
            renamed = await client.patch(
                "/api/v1/accounts/me",
                headers=alice.headers,
                json={"display_name": "Alice Frozen"},
            )
            assert renamed.status_code == 200, renamed.text
            followed = await client.post(
                f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers
            )
            assert followed.status_code == 204, followed.text
            during = await client.get(profile)
            # One socket timeout at most for all three, then Redis is bypassed.
            assert time.monotonic() - started < ONE_TIMEOUT + 1.0
            assert during.status_code == 200
            assert during.json()["display_name"] == "Alice Frozen"
            assert during.json()["follower_count"] == 1
        finally:
            private_redis.thaw()

        await asyncio.sleep(0.6)
        after = await client.get(profile)
        assert after.json()["display_name"] == "Alice Frozen"
        assert after.json()["follower_count"] == 1


async def test_a_load_that_races_a_write_in_another_process_is_not_stored(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Two replicas on one Redis: B's invalidation beats A's slow load."""
    settings = make_settings(tmp_path, redis_url=private_redis.url)
    replica_a = Cache(RedisBackend.from_settings(settings))
    replica_b = Cache(RedisBackend.from_settings(settings))
    row = {"name": b"old"}
    read_done = asyncio.Event()
    write_done = asyncio.Event()

    async def slow_load() -> bytes:
        value = row["name"]  # A reads the row before B's write…
        read_done.set()
        await write_done.wait()  # …and stores only after it
        return value

    async def load() -> bytes:
        return row["name"]

    try:
        reader = asyncio.create_task(replica_a.get_or_load("pet:1", slow_load))
        await read_done.wait()
        row["name"] = b"new"  # B commits, then invalidates
        await replica_b.invalidate("pet:1")
        write_done.set()
        assert await reader == b"old"  # A answers what it read, but…
        # …did not store it: both replicas now see the write.
        assert await replica_b.get_or_load("pet:1", load) == b"new"
        assert await replica_a.get_or_load("pet:1", load) == b"new"

        # A load after an invalidation (no write during it) is stored.
        await replica_b.invalidate("pet:2")
        assert await replica_a.get_or_load("pet:2", load) == b"new"
        row["name"] = b"unseen"
        assert await replica_b.get_or_load("pet:2", load) == b"new"  # a hit
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_home_feeds_go_on_while_redis_is_frozen(
    private_redis: PrivateRedis, settings: Settings, photos: Path
) -> None:
    on_private = settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "cache_key_prefix": "petpal-freeze:",
            "cache_bypass_after_error_seconds": 0.5,
        }
    )
    app = create_app(on_private)
    async with app.router.lifespan_context(app):
        services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            alice, bob = await many_users(services, 2)
            media_id = await a_photo(client, alice, services, photos)
            followed = await client.post(
                f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers
            )
            assert followed.status_code == 204
            old, kept = [await a_post(client, alice, media_id) for _ in range(2)]

            async def home() -> list[str]:
                response = await client.get("/api/v1/feed/home", headers=bob.headers)
                assert response.status_code == 200, response.text
                return [item["id"] for item in response.json()["items"]]

            await drain_jobs(services)
            assert await home() == [kept["id"], old["id"]]  # bob's timeline is warm

            private_redis.freeze()
            try:
                started = time.monotonic()
                new = await a_post(client, alice, media_id)
                assert await home() == [new["id"], kept["id"], old["id"]]
                deleted = await client.delete(
                    f"/api/v1/posts/{old['id']}", headers=alice.headers
                )
                assert deleted.status_code == 204
                assert await home() == [new["id"], kept["id"]]
                # One socket timeout at most, then Redis is bypassed.
                assert time.monotonic() - started < ONE_TIMEOUT + 1.0
            finally:
                private_redis.thaw()

            # The fan-out and retract jobs could not write while Redis was
            # frozen; the timelines they missed are rebuilt, not served stale.
            await asyncio.sleep(0.6)
            assert await home() == [new["id"], kept["id"]]
            await drain_jobs(services)
            assert await home() == [new["id"], kept["id"]]


async def test_likes_and_trending_go_on_while_redis_is_frozen(
    private_redis: PrivateRedis, settings: Settings, photos: Path
) -> None:
    on_private = settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "cache_key_prefix": "petpal-freeze:",
            "cache_bypass_after_error_seconds": 0.5,
        }
    )
    app = create_app(on_private)
    async with app.router.lifespan_context(app):
        services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            alice, bob = await many_users(services, 2)
            media_id = await a_photo(client, alice, services, photos)

            async def trending() -> list[str]:
                await services.cache.invalidate("trending:current")  # a new walk
                response = await client.get("/api/v1/feed/trending")
                assert response.status_code == 200, response.text
                return [item["id"] for item in response.json()["items"]]

            assert await trending() == []  # the ranking exists from here on
            first, second = [await a_post(client, alice, media_id) for _ in range(2)]
            assert await trending() == [second["id"], first["id"]]

            private_redis.freeze()
            try:
                started = time.monotonic()
                liked = await client.post(
                    f"/api/v1/posts/{first['id']}/like", headers=bob.headers
                )
                assert liked.status_code == 200, liked.text
                # Ranked from the rows while Redis is bypassed.
                assert await trending() == [first["id"], second["id"]]
                assert time.monotonic() - started < ONE_TIMEOUT + 1.0
            finally:
                private_redis.thaw()

            # The ranking missed the like; it is deleted once Redis answers
            # and rebuilt from the rows, not served without it.
            await asyncio.sleep(0.6)
            assert await trending() == [first["id"], second["id"]]


@requires_redis
async def test_a_write_stores_its_values_only_where_its_mark_still_is(
    shared_redis: tuple[Settings, str],
) -> None:
    # Two processes (two clients) on one Redis: the store after a write is
    # one atomic check of the writer's own mark, in the server.
    settings = shared_redis[0]
    mine = Cache(RedisBackend.from_settings(settings))
    theirs = Cache(RedisBackend.from_settings(settings))

    async def loaded(value: bytes) -> bytes:
        return value

    try:
        marks = await mine.mark_for_write("counts:1", "counts:2")
        await theirs.invalidate("counts:2")  # written again after our mark
        await mine.store_after_write(marks, {"counts:1": b"ours", "counts:2": b"ours"})
        assert await theirs.get_or_load("counts:1", lambda: loaded(b"db")) == b"ours"
        assert await theirs.get_or_load("counts:2", lambda: loaded(b"db")) == b"db"
    finally:
        await mine.close()
        await theirs.close()
