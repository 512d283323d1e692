from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import update

from petpal.platform.jobs import JobContext
from petpal.platform.services import Services
from petpal.social import tasks
from petpal.social.models import AccountStats, Post
from tests.social.builders import a_photo, a_post, many_users


async def test_recount_repairs_counters_from_the_rows(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob, carol = await many_users(services, 3)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}"
    for fan in (bob, carol):
        await client.post(
            f"/api/v1/accounts/{alice.username}/follow", headers=fan.headers
        )
        await client.post(f"{url}/like", headers=fan.headers)
    await client.post(f"{url}/comments", headers=bob.headers, json={"body": "hi"})
    # Counters knocked out of step, as a cascade from outside would leave them.
    async with services.db.write_session() as session:
        await session.execute(
            update(Post)
            .where(Post.id == post["id"])
            .values(like_count=7, comment_count=9)
        )
        await session.execute(
            update(AccountStats)
            .where(AccountStats.account_id == alice.id)
            .values(follower_count=0, post_count=5)
        )

    payload = {"account_ids": [alice.id, bob.id], "post_ids": [post["id"]]}
    for attempt in (1, 2):  # a job may run twice; the outcome is the same
        await tasks.recount(JobContext(services, "job", attempt), payload)
        fetched = (await client.get(url)).json()
        assert (fetched["like_count"], fetched["comment_count"]) == (2, 1)
        profile = (await client.get(f"/api/v1/accounts/{alice.username}")).json()
        counts = [profile[f"{k}_count"] for k in ("follower", "following", "post")]
        assert counts == [2, 0, 1]
        profile = (await client.get(f"/api/v1/accounts/{bob.username}")).json()
        counts = [profile[f"{k}_count"] for k in ("follower", "following", "post")]
        assert counts == [0, 1, 0]


async def test_the_social_routes_are_in_the_openapi_schema(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, methods in {
        "/api/v1/accounts/{username}/follow": {"post", "delete"},
        "/api/v1/accounts/{username}/followers": {"get"},
        "/api/v1/accounts/{username}/following": {"get"},
        "/api/v1/accounts/{username}/posts": {"get"},
        "/api/v1/posts": {"post"},
        "/api/v1/posts/{post_id}": {"get", "delete"},
        "/api/v1/posts/{post_id}/like": {"post", "delete"},
        "/api/v1/posts/{post_id}/comments": {"get", "post"},
        "/api/v1/comments/{comment_id}": {"delete"},
        "/api/v1/feed/home": {"get"},
        "/api/v1/feed/public": {"get"},
        "/api/v1/feed/trending": {"get"},
        "/api/v1/tags/{tag}": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
