"""An author's posts, the public feed and hashtag pages, served from timelines.

Like tests/social/test_timelines.py, each test builds its app with the
settings it needs; the store is Redis in distributed mode and the
in-process one otherwise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from petpal.platform.cache import CacheBackendError
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.social import home
from petpal.social.feeds import PUBLIC_KEY, author_key, tag_key
from tests.factories import User, queries_on
from tests.social.builders import (
    a_photo,
    a_post,
    an_app,
    many_users,
    run_jobs,
    settle,
    stored,
    walk,
)

TAG = "walkies"


@dataclass(frozen=True)
class Feed:
    url: str
    route: str  # as the request metrics name it
    key: str  # the timeline behind it
    name: str  # as the feed page metrics name it


def feeds_of(author: User) -> list[Feed]:
    """The three feeds a post of ``author`` tagged ``TAG`` is in."""
    return [
        Feed(
            f"/api/v1/accounts/{author.username}/posts",
            "/api/v1/accounts/{username}/posts",
            author_key(author.id),
            "account",
        ),
        Feed("/api/v1/feed/public", "/api/v1/feed/public", PUBLIC_KEY, "public"),
        Feed(f"/api/v1/tags/{TAG}", "/api/v1/tags/{tag}", tag_key(TAG), "tag"),
    ]


async def page(
    client: httpx.AsyncClient,
    feed: Feed,
    viewer: User | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[str], str | None]:
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    headers = viewer.headers if viewer is not None else None
    response = await client.get(feed.url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["id"] for item in body["items"]], body["next_cursor"]


async def listed(client: httpx.AsyncClient, feed: Feed) -> list[str]:
    return (await page(client, feed))[0]


async def truth(client: httpx.AsyncClient, services: Services, feed: Feed) -> list[str]:
    """The whole feed as the database query gives it, page by page."""
    services.cache.enabled = False
    try:
        return [p["id"] for p in await walk(client, feed.url, limit=7)]
    finally:
        services.cache.enabled = True


async def delete(client: httpx.AsyncClient, author: User, post_id: str) -> None:
    response = await client.delete(f"/api/v1/posts/{post_id}", headers=author.headers)
    assert response.status_code == 204, response.text


def pages_from(feed: Feed, source: str) -> float:
    value = REGISTRY.get_sample_value(
        "petpal_feed_pages_total", {"feed": feed.name, "source": source}
    )
    return value or 0.0


async def test_warm_pages_send_no_sql(settings: Settings, photos: Path) -> None:
    async with an_app(settings) as (client, services):
        author, reader = await many_users(services, 2)
        media_id = await a_photo(client, author, services, photos)
        for i in range(12):
            post = await a_post(client, author, media_id, f"#{TAG} {i}")
            if i % 2:
                liked = await client.post(
                    f"/api/v1/posts/{post['id']}/like", headers=reader.headers
                )
                assert liked.status_code == 200
        await settle(services)

        for feed in feeds_of(author):

            async def cost(cursor: str | None, feed: Feed = feed) -> float:
                before = queries_on(feed.route)
                ids, _ = await page(client, feed, reader, limit=5, cursor=cursor)
                assert len(ids) == 5
                return queries_on(feed.route) - before

            _, second = await page(client, feed, reader, limit=5)
            await cost(second)  # builds the timeline and caches the posts
            # Warm: ids from the timeline, the rest from the cache, on the
            # first page and later ones, for a viewer and for nobody.
            assert await cost(None) == 0, feed.url
            assert await cost(second) == 0, feed.url
            before = queries_on(feed.route)
            assert len((await page(client, feed, limit=5))[0]) == 5
            assert queries_on(feed.route) == before, feed.url


async def test_a_new_post_shows_at_once_and_a_deleted_one_goes_at_once(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        author, other = await many_users(services, 2)
        media_id = await a_photo(client, author, services, photos)
        old = await a_post(client, author, media_id, f"#{TAG} old")
        await run_jobs(services)
        feeds = feeds_of(author)
        for feed in feeds:
            assert await listed(client, feed) == [old["id"]]  # builds the timeline

        # Written by the request: no job has run.
        new = await a_post(client, author, media_id, f"#{TAG} new #other")
        untagged = await a_post(
            client, other, await a_photo(client, other, services, photos)
        )
        for feed in feeds:
            assert new["id"] in (await stored(services, feed.key) or []), feed.url
        assert await stored(services, tag_key("other")) is None  # nobody reads it
        assert await listed(client, feeds[0]) == [new["id"], old["id"]]
        assert await listed(client, feeds[1]) == [untagged["id"], new["id"], old["id"]]
        assert await listed(client, feeds[2]) == [new["id"], old["id"]]

        # Gone from every page before its retract job runs…
        await delete(client, author, old["id"])
        for feed in feeds:
            assert old["id"] not in await listed(client, feed), feed.url
        # …and the job takes it out of timelines no page met it in since.
        for feed in feeds:
            await services.timelines.add([feed.key], ids=[old["id"]])
        await run_jobs(services)
        for feed in feeds:
            assert old["id"] not in (await stored(services, feed.key) or []), feed.url
        assert await listed(client, feeds[1]) == [untagged["id"], new["id"]]


async def test_the_fan_out_job_writes_what_the_request_could_not(
    settings: Settings, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        (author,) = await many_users(services, 1)
        media_id = await a_photo(client, author, services, photos)
        feeds = feeds_of(author)
        for feed in feeds:
            assert await listed(client, feed) == []

        async def lost(*args: Any) -> None:
            return None  # as if the store had failed the request's write

        monkeypatch.setattr(home, "deliver_in_request", lost)
        post = await a_post(client, author, media_id, f"#{TAG}")
        await run_jobs(services)
        for feed in feeds:
            assert await stored(services, feed.key) == [post["id"]], feed.url
            assert await listed(client, feed) == [post["id"]], feed.url


async def test_walks_past_the_cap_see_each_post_once_while_others_post_and_delete(
    settings: Settings, photos: Path
) -> None:
    # A cap of 12 (no slack) sends each walk past the timeline into the
    # database.
    async with an_app(settings, timeline_max_entries=12) as (client, services):
        (author,) = await many_users(services, 1)
        media_id = await a_photo(client, author, services, photos)
        for _ in range(24):
            await a_post(client, author, media_id, f"#{TAG}")
        await settle(services)

        for feed in feeds_of(author):
            at_start = await truth(client, services, feed)
            assert len(at_start) >= 20
            past_cap = pages_from(feed, "past_timeline")
            seen: list[str] = []
            deleted: list[str] = []
            cursor: str | None = None
            while True:
                ids, cursor = await page(client, feed, limit=5, cursor=cursor)
                assert not set(ids) & set(deleted), "a deleted post was shown"
                seen.extend(ids)
                if cursor is None:
                    break
                # Meanwhile a post is made (newer than the walk) and one the
                # walk has yet to reach is deleted.
                await a_post(client, author, media_id, f"#{TAG}")
                ahead = [i for i in at_start if i < seen[-1] and i not in deleted]
                if len(ahead) > 2:
                    await delete(client, author, ahead[2])
                    deleted.append(ahead[2])
            assert len(seen) == len(set(seen)), "a post came twice"
            assert seen == [i for i in at_start if i not in deleted], feed.url
            assert deleted, "the walk met no deletion"
            assert pages_from(feed, "past_timeline") > past_cap, "never past the cap"
            # Capped: never more than the cap and its slack (none at 12).
            held = await stored(services, feed.key)
            assert held is not None
            assert 0 < len(held) <= 12
            await settle(services)


async def test_an_expired_timeline_is_rebuilt_as_the_database_has_it(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, timeline_ttl_seconds=1.0) as (client, services):
        (author,) = await many_users(services, 1)
        media_id = await a_photo(client, author, services, photos)
        posts = [await a_post(client, author, media_id, f"#{TAG}") for _ in range(4)]
        await settle(services)
        expected = [p["id"] for p in reversed(posts)]
        feeds = feeds_of(author)
        for feed in feeds:
            assert await listed(client, feed) == expected
            assert await stored(services, feed.key) == expected

        await asyncio.sleep(1.5)  # unread longer than the TTL
        for feed in feeds:
            assert await stored(services, feed.key) is None, feed.url
        # Changed while nobody read them: nothing was written into them.
        await delete(client, author, expected[0])
        newer = await a_post(client, author, media_id, f"#{TAG}")
        expected = [newer["id"], *expected[1:]]
        for feed in feeds:
            assert await listed(client, feed) == expected, feed.url
            assert await stored(services, feed.key) == expected, feed.url

        # Deleted (as after a failed write): rebuilt by the next read.
        await services.timelines.forget(*(feed.key for feed in feeds))
        for feed in feeds:
            assert await listed(client, feed) == expected, feed.url
            assert await stored(services, feed.key) == expected, feed.url


async def test_pages_come_from_the_database_when_timelines_cannot_serve_them(
    settings: Settings, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with an_app(settings, cache_bypass_after_error_seconds=0) as (
        client,
        services,
    ):
        (author,) = await many_users(services, 1)
        media_id = await a_photo(client, author, services, photos)
        posts = [await a_post(client, author, media_id, f"#{TAG}") for _ in range(5)]
        await settle(services)
        expected = [p["id"] for p in reversed(posts)]
        feeds = feeds_of(author)

        async def walked(feed: Feed) -> list[str]:
            return [p["id"] for p in await walk(client, feed.url, limit=2)]

        # The cache turned off (as embedded mode may run): no timeline read.
        services.cache.enabled = False
        try:
            for feed in feeds:
                before = pages_from(feed, "cache_off")
                assert await walked(feed) == expected, feed.url
                assert pages_from(feed, "cache_off") == before + 3
                assert await stored(services, feed.key) is None
        finally:
            services.cache.enabled = True

        # The store failing.
        real_read = services.timelines.backend.read

        async def failing(*args: Any) -> Any:
            raise CacheBackendError("the store is away")

        monkeypatch.setattr(services.timelines.backend, "read", failing)
        for feed in feeds:
            before = pages_from(feed, "backend_error")
            assert await walked(feed) == expected, feed.url
            assert pages_from(feed, "backend_error") == before + 3
        monkeypatch.setattr(services.timelines.backend, "read", real_read)

    # A rebuild over its budget: the page comes from the database, and the
    # build is stored when it ends.
    async with an_app(settings, timeline_rebuild_budget_seconds=0) as (
        client,
        services,
    ):
        for feed in feeds:
            before = pages_from(feed, "rebuild_over_budget")
            assert await listed(client, feed) == expected, feed.url
            assert pages_from(feed, "rebuild_over_budget") == before + 1
            await services.timelines.wait_idle()
            assert await stored(services, feed.key) == expected, feed.url
