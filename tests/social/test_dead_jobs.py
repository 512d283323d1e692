"""A social job that dies leaves no feed or count wrong for good.

Each test makes one kind of job fail every attempt (after anything the
request did itself), lets it die, and reads what a person would see.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from petpal.platform.cache import CacheBackendError
from petpal.platform.jobs import DEAD, OutboxJob, enqueue
from petpal.platform.services import Services
from petpal.social import home
from petpal.social.models import Like
from petpal.social.tasks import RECOUNT_JOB
from tests.factories import User
from tests.social.builders import a_photo, a_post, many_users, settle
from tests.social.test_shared_timelines import TAG, feeds_of, listed
from tests.social.test_timelines import HOME, follow
from tests.social.test_trending import fresh


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("petpal.platform.jobs.backoff", lambda *_: timedelta(0))


def breaks(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """``target`` raises from now on, as the timeline store failing would."""

    async def broken(*_: Any, **__: Any) -> None:
        raise CacheBackendError("the timeline store is away")

    monkeypatch.setattr(target, broken)


async def home_ids(client: httpx.AsyncClient, user: User) -> list[str]:
    page = await client.get(HOME, headers=user.headers)
    assert page.status_code == 200, page.text
    return [item["id"] for item in page.json()["items"]]


async def dead_kinds(services: Services) -> list[str]:
    async with services.db.read_session() as session:
        kinds = await session.scalars(
            select(OutboxJob.kind).where(OutboxJob.status == DEAD)
        )
        return list(kinds.all())


async def test_a_dead_fan_out_leaves_no_follower_without_the_post(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author, reader = await many_users(services, 2)
    await follow(client, reader, author)
    assert await home_ids(client, reader) == []  # the reader's timeline exists
    await settle(services)

    breaks(monkeypatch, "petpal.social.home.fan_out")
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    await settle(services)
    assert await dead_kinds(services) == [home.FANOUT_JOB]

    assert await home_ids(client, reader) == [post["id"]]


async def test_a_dead_fan_out_leaves_no_shared_timeline_without_the_post(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (author,) = await many_users(services, 1)
    feeds = feeds_of(author)
    for feed in feeds:
        assert await listed(client, feed) == []  # the timelines exist

    async def lost(*_: Any) -> None:
        return None  # the request's own write lost, as the store failing would

    monkeypatch.setattr(home, "deliver_in_request", lost)
    breaks(monkeypatch, "petpal.social.home.fan_out")
    media_id = await a_photo(client, author, services, photos)
    post = await a_post(client, author, media_id, f"#{TAG}")
    await settle(services)
    assert await dead_kinds(services) == [home.FANOUT_JOB]

    for feed in feeds:
        assert await listed(client, feed) == [post["id"]], feed.url


async def test_a_dead_follow_change_leaves_no_timeline_without_the_followee(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author, reader = await many_users(services, 2)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    assert await home_ids(client, reader) == []
    await settle(services)

    # The request's own update fails as well as every attempt of the job.
    breaks(monkeypatch, "petpal.social.home.followed")
    await follow(client, reader, author)
    await settle(services)
    assert await dead_kinds(services) == [home.FOLLOW_JOB]

    assert await home_ids(client, reader) == [post["id"]]


async def test_a_dead_recount_still_corrects_the_counts_and_trending(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second, fan = await many_users(services, 3)
    await fresh(client, services)  # the trending ranking exists
    liked = await a_post(client, first, await a_photo(client, first, services, photos))
    newer = await a_post(
        client, second, await a_photo(client, second, services, photos)
    )
    response = await client.post(
        f"/api/v1/posts/{liked['id']}/like", headers=fan.headers
    )
    assert response.status_code == 200, response.text
    assert (await client.get(f"/api/v1/posts/{liked['id']}")).json()["like_count"]
    assert await fresh(client, services) == [liked["id"], newer["id"]]
    # The like vanishes from outside the service (as by a cascade), and the
    # recount that should follow fails every attempt.
    breaks(monkeypatch, "petpal.social.tasks.do_recount")
    async with services.db.write_session() as session:
        await session.execute(delete(Like).where(Like.post_id == liked["id"]))
        enqueue(session, RECOUNT_JOB, {"post_ids": [liked["id"]]})
    await settle(services)
    assert await dead_kinds(services) == [RECOUNT_JOB]

    fetched = await client.get(f"/api/v1/posts/{liked['id']}")
    assert fetched.json()["like_count"] == 0
    assert await fresh(client, services) == [newer["id"], liked["id"]]


async def test_a_recount_corrects_the_counts_it_finds_cached(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author, fan = await many_users(services, 2)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    await client.post(f"/api/v1/posts/{post['id']}/like", headers=fan.headers)
    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["like_count"] == 1  # and cached
    async with services.db.write_session() as session:
        await session.execute(delete(Like).where(Like.post_id == post["id"]))
        enqueue(session, RECOUNT_JOB, {"post_ids": [post["id"]]})
    await settle(services)

    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["like_count"] == 0
