"""The rules every ranking backend keeps: in process, and Redis when configured.

Each test runs against both backends, so that the Lua scripts and their
Python twin cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from petpal.platform.rankings import (
    KEY_PREFIX,
    InProcessRankingBackend,
    RankingBackend,
)
from petpal.platform.redis_rankings import RedisRankingBackend
from tests.conftest import (
    REDIS_PREFIX,
    TEST_REDIS_URL,
    delete_redis_keys,
    make_settings,
)

CUTOFF = 1_700_000_000_000  # milliseconds
TTL = 60.0
# Backends get the full name, as ``Rankings`` gives them.
R = KEY_PREFIX + "r"


@pytest.fixture(params=["in-process", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RankingBackend]:
    if request.param == "in-process":
        yield InProcessRankingBackend()
        return
    if not TEST_REDIS_URL:
        pytest.skip("PETPAL_TEST_REDIS_URL is not set")
    prefix = f"{REDIS_PREFIX}rankings-{os.urandom(4).hex()}:"
    settings = make_settings(
        tmp_path, redis_url=TEST_REDIS_URL, cache_key_prefix=prefix
    )
    redis_backend = RedisRankingBackend.from_settings(settings)
    try:
        yield redis_backend
    finally:
        await redis_backend.close()
        delete_redis_keys(TEST_REDIS_URL, prefix)


async def a_ranking(
    backend: RankingBackend, scores: dict[str, float], keep: int = 100
) -> None:
    assert await backend.begin_build(R, CUTOFF, TTL) == CUTOFF
    assert await backend.finish_build(R, CUTOFF, scores, keep, TTL)


async def test_writes_to_a_missing_ranking_create_nothing(
    backend: RankingBackend,
) -> None:
    await backend.add(R, {"a": 1.0}, CUTOFF, 100)
    assert await backend.top(R, 10) is None
    await a_ranking(backend, {})
    assert await backend.top(R, 10) == []  # built and empty: not missing


async def test_highest_first_and_ties_by_member(backend: RankingBackend) -> None:
    await a_ranking(backend, {"b": 2.0, "a": 2.0, "c": 1.0, "d": 3.0})
    assert await backend.top(R, 10) == ["d", "b", "a", "c"]
    assert await backend.top(R, 2) == ["d", "b"]
    await backend.add(R, {"c": 1.5, "e": 0.5}, CUTOFF, 100)
    assert await backend.top(R, 10) == ["d", "c", "b", "a", "e"]


async def test_a_negative_delta_adds_no_member(backend: RankingBackend) -> None:
    await a_ranking(backend, {"a": 2.0})
    await backend.add(R, {"a": -1.5, "gone": -1.0}, CUTOFF, 100)
    await backend.add(R, {"b": 1.0}, CUTOFF, 100)
    assert await backend.top(R, 10) == ["b", "a"]


async def test_a_build_adds_what_writers_put_aside_after_its_cutoff(
    backend: RankingBackend,
) -> None:
    assert await backend.begin_build(R, CUTOFF, TTL) == CUTOFF
    # Another process joins the build and adopts its cutoff.
    assert await backend.begin_build(R, CUTOFF + 500, TTL) == CUTOFF
    assert await backend.top(R, 10) is None  # building is not ready
    await backend.add(R, {"a": 5.0}, CUTOFF - 1, 100)  # the database has it
    await backend.add(R, {"b": 3.0, "c": 1.0}, CUTOFF, 100)
    await backend.add(R, {"a": -0.5}, CUTOFF + 1, 100)  # an unlike, later
    await backend.remove(R, ["c"])
    assert await backend.finish_build(R, CUTOFF, {"a": 1.0, "b": 0.5}, 100, TTL)
    assert await backend.top(R, 10) == ["b", "a"]
    # The other builder finds it stored: its result is not stored again.
    assert not await backend.finish_build(R, CUTOFF, {"x": 9.0}, 100, TTL)
    assert await backend.top(R, 10) == ["b", "a"]
    # Once ready, writes land at any time.
    await backend.add(R, {"a": 4.0}, CUTOFF - 10_000, 100)
    assert await backend.top(R, 10) == ["a", "b"]


async def test_deleting_a_ranking_voids_its_build(backend: RankingBackend) -> None:
    assert await backend.begin_build(R, CUTOFF, TTL) == CUTOFF
    await backend.add(R, {"a": 1.0}, CUTOFF, 100)
    await backend.delete([R])
    assert not await backend.finish_build(R, CUTOFF, {"b": 1.0}, 100, TTL)
    assert await backend.top(R, 10) is None
    # A new build starts clean, with a cutoff of its own.
    assert await backend.begin_build(R, CUTOFF + 7, TTL) == CUTOFF + 7
    assert await backend.finish_build(R, CUTOFF + 7, {"b": 1.0}, 100, TTL)
    assert await backend.top(R, 10) == ["b"]


async def test_the_lowest_fall_out_past_a_tenth_over_keep(
    backend: RankingBackend,
) -> None:
    await a_ranking(backend, {f"m{i:02}": float(i) for i in range(10)}, keep=10)
    await backend.add(R, {"m10": 10.0}, CUTOFF, 10)  # 11: within the tenth
    assert len(await backend.top(R, 100) or []) == 11
    await backend.add(R, {"m11": 11.0, "m12": 0.5}, CUTOFF, 10)
    top = await backend.top(R, 100)
    assert top == [f"m{i:02}" for i in range(11, 1, -1)]


async def test_clear_and_remove(backend: RankingBackend) -> None:
    await a_ranking(backend, {"a": 1.0, "b": 2.0})
    await backend.remove(R, ["b", "nobody"])
    assert await backend.top(R, 10) == ["a"]
    await backend.clear()
    assert await backend.top(R, 10) is None
