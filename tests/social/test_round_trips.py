"""Warm reads cost a fixed, small number of cache round trips.

Each round trip is a wait for Redis, and a request that waits costs the
server a wake-up of its event loop of its own when requests arrive one at
a time (docs/benchmarks.md): the look-ups a read can make side by side
share one round trip (``_TurnBatch`` in platform/redis_cache.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from petpal.platform.redis_cache import RedisBackend
from petpal.platform.services import Services
from tests.conftest import requires_redis
from tests.social.builders import a_photo, a_post, many_users, settle


@requires_redis
async def test_warm_reads_take_a_fixed_number_of_cache_round_trips(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = services.cache.backend
    assert isinstance(backend, RedisBackend)
    author, reader = await many_users(services, 2)
    followed = await client.post(
        f"/api/v1/accounts/{author.username}/follow", headers=reader.headers
    )
    assert followed.status_code == 204
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    await settle(services)

    calls: list[str] = []

    def counting(name: str, call: Callable[..., Awaitable[Any]]) -> Any:
        async def counted(*args: Any) -> Any:
            calls.append(name)
            return await call(*args)

        return counted

    # Every get goes through the backend's batch of the turn: one MGET each.
    gets = backend._gets
    monkeypatch.setattr(gets, "_run", counting("get", gets._run))
    timelines = services.timelines.backend
    monkeypatch.setattr(timelines, "read", counting("timeline", timelines.read))

    for path, expected in (
        (f"/api/v1/posts/{post['id']}", ["get", "get"]),
        (f"/api/v1/accounts/{author.username}", ["get", "get"]),
        ("/api/v1/feed/home", ["timeline", "get", "get"]),
    ):
        for _ in range(2):  # the first read fills what the second finds
            calls.clear()
            response = await client.get(path, headers=reader.headers)
            assert response.status_code == 200, response.text
        assert calls == expected, path
