"""The benchmark report's baseline routes and its naive path, in both modes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from petpal.platform.app import create_app
from petpal.platform.baselines import B0_PATH, B1_PATH, B2_PATH, with_baselines
from petpal.platform.settings import Settings
from tests.factories import a_user


@pytest.fixture
async def baseline_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"benchmark_baselines": True}))
    transport = httpx.ASGITransport(app=with_baselines(app))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://petpal.test") as c,
    ):
        yield c


async def test_baselines_answer_in_front_of_the_app(
    baseline_client: httpx.AsyncClient,
) -> None:
    await a_user(baseline_client)  # B2 reads an account
    for path in (B0_PATH, B1_PATH, B2_PATH, B1_PATH, B2_PATH):
        answer = await baseline_client.get(path)
        assert answer.status_code == 200, path
        assert answer.json() == {"ok": True}
        # In front of the middleware: no request id is added.
        assert "x-request-id" not in answer.headers


async def test_the_full_stack_route_authenticates_and_validates(
    baseline_client: httpx.AsyncClient,
) -> None:
    user = await a_user(baseline_client)
    path = "/api/v1/baseline/stack"
    answer = await baseline_client.get(path, params={"n": 3}, headers=user.headers)
    assert answer.status_code == 200
    assert answer.json() == {"account_id": user.id, "n": 3}
    assert "x-request-id" in answer.headers
    assert (await baseline_client.get(path)).status_code == 401
    invalid = await baseline_client.get(path, params={"n": 0}, headers=user.headers)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"


async def test_baselines_are_off_by_default(client: httpx.AsyncClient) -> None:
    user = await a_user(client)
    for path in (B0_PATH, "/api/v1/baseline/stack"):
        assert (await client.get(path, headers=user.headers)).status_code == 404


async def test_with_the_cache_off_reads_still_answer(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cache_enabled": False}))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://petpal.test") as c,
    ):
        assert app.state.services.cache.enabled is False
        user = await a_user(c)
        profile = await c.get(f"/api/v1/accounts/{user.username}")
        assert profile.status_code == 200
        feed = await c.get("/api/v1/feed/home", headers=user.headers)
        assert feed.status_code == 200
        assert feed.json()["items"] == []
