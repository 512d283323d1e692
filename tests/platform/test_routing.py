"""Service routes are served flat under the API prefix, as each declares them."""

from __future__ import annotations

import importlib

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from petpal.platform.app import API_PREFIX
from petpal.platform.services import SERVICE_NAMES
from tests.factories import a_user


def test_every_service_route_is_a_route_of_the_app(app: FastAPI) -> None:
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    for name in SERVICE_NAMES:
        router = importlib.import_module(f"petpal.{name}.api").router
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods:
                assert (API_PREFIX + route.path, method) in served


async def test_routes_keep_their_tags_dependencies_and_problem_responses(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    sign_up = schema["paths"]["/api/v1/accounts"]["post"]
    assert sign_up["tags"] == ["identity"]
    assert sign_up["operationId"] == "sign_up_api_v1_accounts_post"
    assert "application/problem+json" in sign_up["responses"]["429"]["content"]
    assert "/api/v1/baseline/stack" not in schema["paths"]


async def test_a_literal_path_wins_over_a_parameter_declared_after_it(
    client: httpx.AsyncClient,
) -> None:
    user = await a_user(client)
    me = await client.get("/api/v1/accounts/me", headers=user.headers)
    assert me.status_code == 200
    assert me.json()["username"] == user.username


async def test_a_slash_too_many_or_too_few_is_a_404_never_a_redirect(
    client: httpx.AsyncClient,
) -> None:
    """Found by a trial: Starlette redirected to the path without its
    trailing slash at whatever host the Host header named."""
    user = await a_user(client)
    other = await a_user(client)
    for path in (
        "/api/v1/feed/home/",
        "/api/v1/posts/01ARZ3NDEKTSV4RRFFQ69G5FA%2F",
        "/api/v1/accounts/me/",
        # An encoded slash is no separator (found by a trial: these reached
        # the routes the decoded paths name).
        f"/api/v1/accounts/{other.username}%2Fposts",
        f"/api/v1/accounts/{other.username}%2ffollow",
        "/media-files/media%2F01ARZ3NDEKTSV4RRFFQ69G5FAV/small.jpg",
    ):
        answer = await client.get(
            path, headers={**user.headers, "Host": "evil.example"}
        )
        assert answer.status_code == 404, (path, answer.status_code)
        assert "location" not in answer.headers
        assert answer.headers["content-type"] == "application/problem+json"


async def test_an_encoded_slash_never_reaches_a_route(
    client: httpx.AsyncClient,
) -> None:
    user, other = await a_user(client), await a_user(client)
    follow = await client.post(
        f"/api/v1/accounts/{other.username}%2Ffollow", headers=user.headers
    )
    assert follow.status_code == 404, follow.text
    assert follow.headers["content-type"] == "application/problem+json"
    followers = await client.get(f"/api/v1/accounts/{other.username}")
    assert followers.json()["follower_count"] == 0
