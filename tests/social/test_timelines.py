"""Home timelines: fan-out on write, big accounts merged at read, in both modes.

Each test builds its app with the settings it needs (a small cap and
threshold make the edges reachable with a handful of posts); the store is
Redis in distributed mode and the in-process one otherwise, so every test
here runs against both.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from petpal.platform import timelines as timelines_module
from petpal.platform.cache import CacheBackendError
from petpal.platform.jobs import BACKSTOP_DELAY, DONE, PENDING, OutboxJob, enqueue
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.platform.timelines import TimelineContent
from petpal.social import home
from petpal.social.feeds import author_key
from petpal.social.home import home_key
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

HOME = "/api/v1/feed/home"


async def follow(client: httpx.AsyncClient, follower: User, followee: User) -> None:
    response = await client.post(
        f"/api/v1/accounts/{followee.username}/follow", headers=follower.headers
    )
    assert response.status_code == 204, response.text


async def unfollow(client: httpx.AsyncClient, follower: User, followee: User) -> None:
    response = await client.delete(
        f"/api/v1/accounts/{followee.username}/follow", headers=follower.headers
    )
    assert response.status_code == 204, response.text


async def delete(client: httpx.AsyncClient, author: User, post_id: str) -> None:
    response = await client.delete(f"/api/v1/posts/{post_id}", headers=author.headers)
    assert response.status_code == 204, response.text


async def home_ids(
    client: httpx.AsyncClient, user: User, limit: int = 100
) -> list[str]:
    response = await client.get(HOME, headers=user.headers, params={"limit": limit})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def truth(
    client: httpx.AsyncClient, services: Services, user: User
) -> list[dict[str, Any]]:
    """The whole home feed as the database query gives it, page by page."""
    services.cache.enabled = False
    try:
        return await walk(client, HOME, headers=user.headers, limit=7)
    finally:
        services.cache.enabled = True


async def test_a_post_reaches_the_timelines_of_active_followers(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings) as (client, services):
        alice, reader, away = await many_users(services, 3)
        media_id = await a_photo(client, alice, services, photos)
        await follow(client, reader, alice)
        await follow(client, away, alice)
        assert await home_ids(client, reader) == []  # builds reader's timeline

        post = await a_post(client, alice, media_id, "hello")
        await settle(services)
        assert await stored(services, home_key(reader.id)) == [post["id"]]
        assert await stored(services, home_key(alice.id)) is None
        # Nobody read away's feed: no timeline, no write for it.
        assert await stored(services, home_key(away.id)) is None

        assert await home_ids(client, away) == [post["id"]]
        assert await stored(services, home_key(away.id)) == [post["id"]]
        assert await home_ids(client, alice) == [post["id"]]
        newer = await a_post(client, alice, media_id, "again")
        # The author's own timeline has it at once, before the job runs.
        assert await home_ids(client, alice) == [newer["id"], post["id"]]
        await settle(services)
        for user in (reader, away):
            assert await home_ids(client, user) == [newer["id"], post["id"]]


async def test_accounts_over_the_threshold_are_merged_at_read_time(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, fanout_max_followers=2) as (client, services):
        star, pal, early, late, third = await many_users(services, 5)
        star_media = await a_photo(client, star, services, photos)
        pal_media = await a_photo(client, pal, services, photos)
        await follow(client, early, star)
        await follow(client, early, pal)
        before = await a_post(client, star, star_media, "still small")
        await settle(services)
        assert await home_ids(client, early) == [before["id"]]

        # Three followers: over the threshold of two.
        await follow(client, late, star)
        await follow(client, third, star)
        big = [await a_post(client, star, star_media, f"big {i}") for i in range(2)]
        by_pal = await a_post(client, pal, pal_media, "small")
        await settle(services)
        # Not fanned out: early's timeline links to star's instead.
        assert await stored(services, home_key(early.id)) == [
            by_pal["id"],
            before["id"],
        ]
        (timeline,) = await services.timelines.read([home_key(early.id)], None, 10)
        assert timeline is not None
        assert timeline.links == [star.id]
        expected = [by_pal["id"], big[1]["id"], big[0]["id"], before["id"]]
        assert await home_ids(client, early) == expected
        assert await stored(services, author_key(star.id)) == [
            big[1]["id"],
            big[0]["id"],
            before["id"],
        ]
        # A timeline built now links to star from the start.
        star_posts = [big[1]["id"], big[0]["id"], before["id"]]
        assert await home_ids(client, late) == star_posts
        assert await stored(services, home_key(late.id)) is not None

        # Back under the threshold: fanned out again; the old link does no harm.
        await unfollow(client, third, star)
        small_again = await a_post(client, star, star_media, "small again")
        await settle(services)
        assert small_again["id"] in (await stored(services, home_key(early.id)) or [])
        assert await home_ids(client, early) == [small_again["id"], *expected]
        assert await home_ids(client, late) == [small_again["id"], *star_posts]


async def test_following_and_unfollowing_change_the_feed_at_once(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, fanout_max_followers=1) as (client, services):
        reader, alice, star, fan = await many_users(services, 4)
        alice_media = await a_photo(client, alice, services, photos)
        star_media = await a_photo(client, star, services, photos)
        await follow(client, fan, star)  # one follower more: star is big
        by_alice = [await a_post(client, alice, alice_media) for _ in range(3)]
        by_star = [await a_post(client, star, star_media) for _ in range(2)]
        mine = await a_post(
            client, reader, await a_photo(client, reader, services, photos)
        )
        assert await home_ids(client, reader) == [mine["id"]]

        # Without waiting for any job: the request adjusts the timeline.
        await follow(client, reader, alice)
        alice_ids = [p["id"] for p in reversed(by_alice)]
        assert await home_ids(client, reader) == [mine["id"], *alice_ids]
        await follow(client, reader, star)
        star_ids = [p["id"] for p in reversed(by_star)]
        assert await home_ids(client, reader) == [mine["id"], *star_ids, *alice_ids]
        await unfollow(client, reader, alice)
        assert await home_ids(client, reader) == [mine["id"], *star_ids]
        # The jobs committed with each change leave the same result.
        await settle(services)
        assert await home_ids(client, reader) == [mine["id"], *star_ids]
        await unfollow(client, reader, star)
        assert await home_ids(client, reader) == [mine["id"]]
        await settle(services)
        assert await home_ids(client, reader) == [mine["id"]]


@pytest.mark.parametrize("posts", [8, 11])
async def test_a_follow_of_more_posts_than_a_timeline_holds_loses_none(
    settings: Settings, photos: Path, posts: int
) -> None:
    """Found by a trial: a warm timeline given the newest cap posts of an
    account with more stayed complete, and the older ones were on no page.
    Up to the cap they are added; past it, the timeline is rebuilt."""
    async with an_app(settings, timeline_max_entries=8) as (client, services):
        reader, alice = await many_users(services, 2)
        media_id = await a_photo(client, alice, services, photos)
        by_alice = [(await a_post(client, alice, media_id))["id"] for _ in range(posts)]
        mine = await a_post(
            client, reader, await a_photo(client, reader, services, photos)
        )
        assert await home_ids(client, reader) == [mine["id"]]  # warm

        await follow(client, reader, alice)
        newest_first = sorted([*by_alice, mine["id"]], reverse=True)
        held = await stored(services, home_key(reader.id))
        if posts <= 8:  # added (and trimmed back to the cap)
            assert held is not None
            assert held == newest_first[: len(held)]
        else:  # forgotten
            assert held is None
        for _ in range(2):  # as the follow left it, then as rebuilt
            seen = await walk(client, HOME, headers=reader.headers, limit=3)
            assert [p["id"] for p in seen] == newest_first
        await settle(services)  # the follow's backstop job changes nothing
        seen = await walk(client, HOME, headers=reader.headers, limit=3)
        assert [p["id"] for p in seen] == newest_first


async def test_a_deleted_post_leaves_every_feed_before_its_job_runs(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        alice, bob, carol, dave = await many_users(services, 4)
        media_id = await a_photo(client, alice, services, photos)
        for user in (bob, carol, dave):
            await follow(client, user, alice)
            assert await home_ids(client, user) == []
        posts = [await a_post(client, alice, media_id) for _ in range(3)]
        await run_jobs(services)
        everything = [p["id"] for p in reversed(posts)]
        for user in (bob, carol, dave):
            assert await home_ids(client, user) == everything

        gone = posts[1]["id"]
        await delete(client, alice, gone)
        # The retract job has not run: the timelines still hold the id…
        for user in (bob, carol, dave):
            assert gone in (await stored(services, home_key(user.id)) or [])
        # …and no feed shows it; a page that meets it also drops it.
        rest = [i for i in everything if i != gone]
        for user in (bob, carol, alice):
            assert await home_ids(client, user) == rest
            assert gone not in (await stored(services, home_key(user.id)) or [])
        post = await client.get(f"/api/v1/posts/{gone}")
        assert post.status_code == 404
        await run_jobs(services)
        assert await stored(services, home_key(dave.id)) == rest
        assert await home_ids(client, dave) == rest


async def test_walks_see_each_post_once_while_others_post_and_delete(
    settings: Settings, photos: Path
) -> None:
    # A cap of 12 sends the walk past the timelines into the database; the
    # threshold makes one author big, merged at read.
    async with an_app(settings, timeline_max_entries=12, fanout_max_followers=3) as (
        client,
        services,
    ):
        reader, small, other, star, *fans = await many_users(services, 7)
        authors = [small, other, star]
        media = {a.id: await a_photo(client, a, services, photos) for a in authors}
        for author in authors:
            await follow(client, reader, author)
        for fan in fans:
            await follow(client, fan, star)
        rng = random.Random(4)
        live: dict[str, User] = {}
        for i in range(30):
            author = rng.choice(authors)
            live[(await a_post(client, author, media[author.id], f"#{i}"))["id"]] = (
                author
            )
        await settle(services)
        assert await home_ids(client, reader, limit=1)  # warm the timeline
        at_start = [p["id"] for p in await truth(client, services, reader)]
        assert sorted(at_start, reverse=True) == sorted(live, reverse=True)

        step = 0
        deleted_at: dict[str, int] = {}
        created: set[str] = set()
        done = asyncio.Event()

        async def meddle() -> None:
            nonlocal step
            turn = 0
            while not done.is_set():
                turn += 1
                if turn % 2 == 0 or not live:
                    author = rng.choice(authors)
                    post = await a_post(client, author, media[author.id], "new")
                    live[post["id"]] = author
                    created.add(post["id"])
                else:
                    victim = rng.choice(sorted(live))
                    author = live.pop(victim)
                    await delete(client, author, victim)
                    step += 1
                    deleted_at[victim] = step
                await asyncio.sleep(0)

        meddler = asyncio.create_task(meddle())
        seen: list[str] = []
        cursor: str | None = None
        try:
            while True:
                asked_at = step
                params: dict[str, Any] = {"limit": 4}
                if cursor is not None:
                    params["cursor"] = cursor
                response = await client.get(HOME, headers=reader.headers, params=params)
                assert response.status_code == 200, response.text
                page = [item["id"] for item in response.json()["items"]]
                for post_id in page:
                    # Never a post whose deletion had finished before asking.
                    assert deleted_at.get(post_id, asked_at + 1) > asked_at, post_id
                seen.extend(page)
                cursor = response.json()["next_cursor"]
                if cursor is None:
                    break
                await asyncio.sleep(0.01)  # let the meddler and the jobs run
        finally:
            done.set()
            await meddler

        assert len(seen) == len(set(seen)), "a post came twice"
        assert seen == sorted(seen, reverse=True)
        assert set(seen) <= set(at_start) | created
        missing = set(at_start) - set(deleted_at) - set(seen)
        assert not missing, "a post that was there all along was skipped"
        assert deleted_at, "the walk was too short to meet a deletion"


async def test_an_expired_timeline_is_rebuilt_as_the_database_has_it(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, timeline_ttl_seconds=1.0, timeline_max_entries=10) as (
        client,
        services,
    ):
        reader, alice, bob = await many_users(services, 3)
        for author in (alice, bob):
            media_id = await a_photo(client, author, services, photos)
            await follow(client, reader, author)
            for i in range(8):
                await a_post(client, author, media_id, f"#{i}")
        await settle(services)
        expected = await truth(client, services, reader)
        assert len(expected) == 16
        assert await walk(client, HOME, headers=reader.headers, limit=3) == expected
        assert await stored(services, home_key(reader.id)) is not None

        await asyncio.sleep(1.5)  # unread longer than the TTL
        assert await stored(services, home_key(reader.id)) is None
        assert await walk(client, HOME, headers=reader.headers, limit=5) == expected
        rebuilt = await stored(services, home_key(reader.id))
        # The newest ten: the cap; the walk went on in the database.
        assert rebuilt == [p["id"] for p in expected[:10]]


async def test_a_slow_rebuild_serves_the_page_from_the_database(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, timeline_rebuild_budget_seconds=0) as (
        client,
        services,
    ):
        reader, alice = await many_users(services, 2)
        media_id = await a_photo(client, alice, services, photos)
        await follow(client, reader, alice)
        posts = [await a_post(client, alice, media_id) for _ in range(3)]
        await settle(services)
        expected = [p["id"] for p in reversed(posts)]
        # No time to wait for the rebuild: never an empty page meanwhile.
        assert await home_ids(client, reader) == expected
        await services.timelines.wait_idle()  # it went on in the background
        assert await stored(services, home_key(reader.id)) == expected
        assert await home_ids(client, reader) == expected  # caches the counts
        before = queries_on(HOME)
        assert await home_ids(client, reader) == expected
        assert queries_on(HOME) == before


async def test_a_warm_home_page_sends_no_sql(settings: Settings, photos: Path) -> None:
    async with an_app(settings, fanout_max_followers=1) as (client, services):
        reader, alice, star, fan = await many_users(services, 4)
        await follow(client, fan, star)
        for author in (alice, star):
            media_id = await a_photo(client, author, services, photos)
            await follow(client, reader, author)
            for i in range(6):
                post = await a_post(
                    client, author, media_id, f"#{i} @{reader.username}"
                )
                if i % 2:
                    liked = await client.post(
                        f"/api/v1/posts/{post['id']}/like", headers=reader.headers
                    )
                    assert liked.status_code == 200
        await settle(services)

        async def cost(cursor: str | None) -> tuple[float, str | None]:
            before = queries_on(HOME)
            params: dict[str, Any] = {"limit": 5}
            if cursor is not None:
                params["cursor"] = cursor
            response = await client.get(HOME, headers=reader.headers, params=params)
            assert response.status_code == 200
            assert len(response.json()["items"]) == 5
            return queries_on(HOME) - before, response.json()["next_cursor"]

        cold, cursor = await cost(None)
        assert cold > 0
        await cost(cursor)
        # Warm: the timelines, counts, likes and views all come from the
        # cache, the merged big account's too, on the first page and later.
        assert (await cost(None))[0] == 0
        assert (await cost(cursor))[0] == 0


async def test_the_store_keeps_its_rules(settings: Settings) -> None:
    async with an_app(settings, timeline_max_entries=4) as (_, services):
        timelines = services.timelines
        ids = [f"01J0000000000000000000000{c}" for c in "0123456789"]

        async def load(content: TimelineContent) -> TimelineContent:
            return content

        # Writers only add to timelines that exist.
        assert await timelines.add(["t:a"], ids=ids[:1]) == []
        built = await timelines.build(
            "t:a", lambda: load(TimelineContent(ids[:3][::-1], True)), 5.0
        )
        assert built is not None
        assert await stored(services, "t:a") == ids[:3][::-1]
        assert await timelines.add(["t:a", "t:none"], ids=ids[3:6]) == ["t:a"]
        # Capped at four: the oldest left, and it no longer holds everything.
        (capped,) = await timelines.read(["t:a"], None, 10)
        assert capped is not None
        assert capped.ids == ids[2:6][::-1]
        assert not capped.complete
        # Nothing older than what an incomplete timeline holds is added.
        await timelines.add(["t:a"], ids=[ids[0]])
        assert await stored(services, "t:a") == ids[2:6][::-1]
        (below,) = await timelines.read(["t:a"], ids[4], 10)
        assert below is not None
        assert below.ids == [ids[3], ids[2]]

        # A build whose timeline is deleted meanwhile stores nothing.
        release = asyncio.Event()

        async def slow() -> TimelineContent:
            await release.wait()
            return TimelineContent(["stale"], True)

        waiting = asyncio.create_task(timelines.build("t:b", slow, 5.0))
        await asyncio.sleep(0.05)
        await timelines.forget("t:b")
        release.set()
        assert await waiting is not None
        assert await stored(services, "t:b") is None


async def test_an_unlink_takes_one_source_out_and_voids_a_build(
    settings: Settings,
) -> None:
    async with an_app(settings) as (_, services):
        timelines = services.timelines
        ids = ulids(6)
        content = TimelineContent(ids[::-1], True, ["alice", "star"])
        assert await timelines.build("t:a", lambda: loaded(content), 5.0)

        # Out go the source's ids and its link; the rest, and the facts, stay.
        assert await timelines.unlink("t:a", [ids[1], ids[4], "01J-absent"], "star")
        (kept,) = await timelines.read(["t:a"], None, 100)
        assert kept is not None
        assert kept.ids == [ids[5], ids[3], ids[2], ids[0]]
        assert kept.complete
        assert kept.links == ["alice"]
        # No timeline: nothing to change, nothing made.
        assert not await timelines.unlink("t:none", ids, "star")
        assert await stored(services, "t:none") is None

        # A timeline being built is deleted: its build read the source before
        # the change, and stores nothing.
        release = asyncio.Event()

        async def slow() -> TimelineContent:
            await release.wait()
            return TimelineContent(ids[::-1], True, ["star"])

        building = asyncio.create_task(timelines.build("t:b", slow, 5.0))
        await asyncio.sleep(0.05)
        assert not await timelines.unlink("t:b", ids[:2], "star")
        release.set()
        assert await building is not None
        assert await stored(services, "t:b") is None


async def test_an_unfollow_keeps_the_timeline_warm_without_the_followee(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, fanout_max_followers=1) as (client, services):
        reader, alice, star, fan = await many_users(services, 4)
        await follow(client, fan, star)  # star is big: merged through a link
        posts: dict[str, list[str]] = {}
        for author in (alice, star):
            media_id = await a_photo(client, author, services, photos)
            await follow(client, reader, author)
            posts[author.id] = [
                (await a_post(client, author, media_id))["id"] for _ in range(3)
            ]
        await settle(services)
        everything = sorted(posts[alice.id] + posts[star.id], reverse=True)
        assert await home_ids(client, reader) == everything
        await home_ids(client, reader)  # every post's view cached

        for gone, left in ((alice, posts[star.id]), (star, [])):
            await unfollow(client, reader, gone)
            before = queries_on(HOME)
            # At once, and from the timeline as it was: nothing rebuilt.
            assert await home_ids(client, reader) == sorted(left, reverse=True)
            assert queries_on(HOME) == before
        await settle(services)
        assert await home_ids(client, reader) == []


async def test_an_unfollow_that_a_new_follow_overtook_forgets_the_timeline(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings) as (client, services):
        reader, alice = await many_users(services, 2)
        await follow(client, reader, alice)
        media_id = await a_photo(client, alice, services, photos)
        post = await a_post(client, alice, media_id)
        await settle(services)
        assert await home_ids(client, reader) == [post["id"]]

        # The unfollow's own change, run late: the reader follows alice again
        # by then, so the timeline without her posts must not stay; its
        # backstop is recorded done only after the timeline is forgotten.
        backstop = await a_backstop(services, reader, alice)
        await home.unfollowed(services, reader.id, alice.id, backstop=backstop)
        assert await stored(services, home_key(reader.id)) is None
        assert await job_status(services, backstop) == DONE
        assert await home_ids(client, reader) == [post["id"]]


async def test_a_follow_that_an_unfollow_overtook_forgets_the_timeline(
    settings: Settings, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store is tried again at once after the error below.
    async with an_app(settings, cache_bypass_after_error_seconds=0) as (
        client,
        services,
    ):
        reader, alice = await many_users(services, 2)
        media_id = await a_photo(client, alice, services, photos)
        post = await a_post(client, alice, media_id)
        assert await home_ids(client, reader) == []  # the reader's timeline
        await settle(services)

        # The follow's own change, run after an unfollow that came next had
        # done its own: her posts written now must not stay. While the
        # timeline cannot be forgotten, the backstop stays to do it.
        backstop = await a_backstop(services, reader, alice)
        with monkeypatch.context() as patch:

            async def fail(keys: Sequence[str]) -> None:
                raise CacheBackendError("the store is away")

            patch.setattr(services.timelines.backend, "delete", fail)
            with pytest.raises(CacheBackendError):
                await home.followed(
                    services, reader.id, alice.id, followers=1, backstop=backstop
                )
        assert await job_status(services, backstop) == PENDING
        await home.followed(
            services, reader.id, alice.id, followers=1, backstop=backstop
        )
        assert await stored(services, home_key(reader.id)) is None
        assert await job_status(services, backstop) == DONE
        assert post["id"] not in await home_ids(client, reader)


async def a_backstop(services: Services, follower: User, followee: User) -> str:
    """A pending backstop job of a follow change, as a request commits one."""
    async with services.db.write_session() as session:
        return enqueue(
            session,
            home.FOLLOW_JOB,
            {"follower_id": follower.id, "followee_id": followee.id},
            delay=BACKSTOP_DELAY,
        )


async def job_status(services: Services, job_id: str) -> str:
    async with services.db.read_session() as session:
        job = await session.get(OutboxJob, job_id)
        assert job is not None
        return job.status


def ulids(count: int) -> list[str]:
    """Ids that sort like ULIDs, oldest first."""
    return [f"01J{n:023d}" for n in range(count)]


async def loaded(content: TimelineContent) -> TimelineContent:
    return content


async def test_a_timeline_fills_the_caps_slack_before_a_write_trims_it(
    settings: Settings,
) -> None:
    async with an_app(settings, timeline_max_entries=32) as (_, services):
        timelines = services.timelines
        assert timelines.slack == 2
        ids = ulids(40)
        content = TimelineContent(ids[:30][::-1], True, ["x", "y", "z"])
        assert await timelines.build("t:a", lambda: loaded(content), 5.0)

        # Past the cap, within the slack: nothing trimmed, and a timeline
        # that holds every id stays complete. Its links are no ids.
        await timelines.add(["t:a"], ids=ids[30:33])
        await timelines.add(["t:a"], ids=ids[33:34])
        (grown,) = await timelines.read(["t:a"], None, 100)
        assert grown is not None
        assert grown.ids == ids[:34][::-1]
        assert grown.complete
        assert grown.links == ["x", "y", "z"]

        # One more is past the slack: back to the newest 32, incomplete.
        await timelines.add(["t:a"], ids=ids[34:35])
        (trimmed,) = await timelines.read(["t:a"], None, 100)
        assert trimmed is not None
        assert trimmed.ids == ids[3:35][::-1]
        assert not trimmed.complete
        assert trimmed.links == ["x", "y", "z"]
        # Its floor holds: an id older than its oldest is refused.
        await timelines.add(["t:a"], ids=[ids[2]])
        assert await stored(services, "t:a") == ids[3:35][::-1]


async def test_a_new_id_at_the_bottom_of_a_timeline_meets_its_floor(
    settings: Settings,
) -> None:
    async with an_app(settings) as (_, services):
        timelines = services.timelines
        ids = ulids(8)
        held = [ids[6], ids[4], ids[2]]
        incomplete = TimelineContent(held, False)
        for key in ("t:incomplete", "t:emptied"):
            assert await timelines.build(key, lambda: loaded(incomplete), 5.0)
        complete = TimelineContent(held, True)
        assert await timelines.build("t:complete", lambda: loaded(complete), 5.0)

        # The floor of an incomplete timeline is its oldest id: that one is
        # there already, one below it is refused, any above it taken (just
        # above it, or the newest).
        for new in (ids[2], ids[1], ids[3], ids[7]):
            assert await timelines.add(["t:incomplete"], ids=[new]) == ["t:incomplete"]
        assert await stored(services, "t:incomplete") == [
            ids[7],
            ids[6],
            ids[4],
            ids[3],
            ids[2],
        ]
        # A complete timeline holds every id there is: any id is taken.
        assert await timelines.add(["t:complete"], ids=[ids[0]]) == ["t:complete"]
        assert await stored(services, "t:complete") == [*held, ids[0]]
        # An incomplete timeline that lost all its ids knows nothing: the
        # next write deletes it, and it is rebuilt when read.
        await timelines.remove(["t:emptied"], held)
        assert await stored(services, "t:emptied") == []
        assert await timelines.add(["t:emptied"], ids=[ids[0]]) == []
        assert await stored(services, "t:emptied") is None

        # A timeline being built takes every id; its build applies the floor.
        release = asyncio.Event()

        async def slow() -> TimelineContent:
            await release.wait()
            return TimelineContent(ids[3:5][::-1], False)

        building = asyncio.create_task(timelines.build("t:building", slow, 5.0))
        await asyncio.sleep(0.05)
        assert await timelines.add(["t:building"], ids=[ids[4]]) == ["t:building"]
        assert await timelines.add(["t:building"], ids=[ids[0]]) == ["t:building"]
        release.set()
        await building
        assert await stored(services, "t:building") == ids[3:5][::-1]


async def test_a_write_to_many_timelines_goes_in_bounded_batches(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timelines_module, "ADDS_IN_FLIGHT", 2)
    async with an_app(settings, cache_bypass_after_error_seconds=0) as (_, services):
        timelines = services.timelines
        monkeypatch.setattr(timelines.backend, "add_batch", 4)
        keys = [f"t:{i:02d}" for i in range(11)]
        existing = keys[::3]
        for key in existing:
            empty = TimelineContent([], True)
            assert await timelines.build(key, lambda c=empty: loaded(c), 5.0)

        real_add = timelines.backend.add
        sizes: list[int] = []
        running = most = 0
        failing: set[str] = set()

        async def add(names: Sequence[str], *args: Any) -> list[str]:
            nonlocal running, most
            sizes.append(len(names))
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0.02)  # time for the others to start, if they may
                if failing & set(names):
                    raise CacheBackendError("this batch fails")
                return await real_add(names, *args)
            finally:
                running -= 1

        monkeypatch.setattr(timelines.backend, "add", add)
        first, second = ulids(2)
        assert await timelines.add(keys, ids=[first]) == existing
        assert sizes == [4, 4, 3]
        assert most == 2

        # One batch fails: the others finish before the error is raised, and
        # the failed batch's timelines are owed a deletion (rebuilt when read).
        failing.add("timeline:t:06")
        with pytest.raises(CacheBackendError):
            await timelines.add(keys, ids=[second])
        assert running == 0
        await timelines.read(["t:00"], None, 1)  # the store answers: debts paid
        assert await stored(services, "t:06") is None
        assert await stored(services, "t:00") == [second, first]
        assert await stored(services, "t:09") == [second, first]


async def test_a_walk_reads_the_slack_from_the_timeline_then_past_a_trim_the_database(
    settings: Settings, photos: Path
) -> None:
    async with an_app(settings, timeline_max_entries=16) as (client, services):
        assert services.timelines.slack == 1
        reader, alice = await many_users(services, 2)
        media_id = await a_photo(client, alice, services, photos)
        await follow(client, reader, alice)
        posts = [await a_post(client, alice, media_id) for _ in range(15)]
        await settle(services)
        # Built from fewer posts than the cap: complete.
        assert len(await home_ids(client, reader)) == 15
        posts += [await a_post(client, alice, media_id) for _ in range(2)]
        await settle(services)
        everything = [p["id"] for p in reversed(posts)]
        assert await stored(services, home_key(reader.id)) == everything

        async def walked() -> list[str]:
            pages = await walk(client, HOME, headers=reader.headers, limit=5)
            return [p["id"] for p in pages]

        assert await walked() == everything  # caches the posts' counts
        before = queries_on(HOME)
        # The timeline went past its cap into the slack and holds every post:
        # the whole walk comes from it.
        assert await walked() == everything
        assert queries_on(HOME) == before

        posts.append(await a_post(client, alice, media_id))
        await settle(services)
        everything = [p["id"] for p in reversed(posts)]
        # Past the slack: trimmed to the cap, and the walk's end comes from
        # the database, each post once.
        assert await stored(services, home_key(reader.id)) == everything[:16]
        assert await walked() == everything
        assert queries_on(HOME) > before


async def test_fan_out_reads_the_next_followers_while_it_writes_and_drops_who_left(
    settings: Settings, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(home, "FANOUT_CHUNK", 2)
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        author, leaver, *others = await many_users(services, 7)
        idle = others.pop()
        media_id = await a_photo(client, author, services, photos)
        for user in (leaver, *others, idle):
            await follow(client, user, author)
        for user in (leaver, *others):
            assert await home_ids(client, user) == []  # their timelines exist
        post = await a_post(client, author, media_id)

        real_read = services.db.read_session
        readers: list[str] = []

        @asynccontextmanager
        async def read_session() -> AsyncIterator[Any]:
            task = asyncio.current_task()
            readers.append(task.get_name() if task is not None else "")
            async with real_read() as session:
                yield session

        monkeypatch.setattr(services.db, "read_session", read_session)
        real_add = services.timelines.add
        chunk_reads_at_first_write: list[int] = []

        async def add(keys: Sequence[str], **kwargs: Any) -> list[str]:
            if home_key(leaver.id) in keys:
                # Found in the first chunk, then gone before the write, and
                # back reading a timeline rebuilt without the author.
                await unfollow(client, leaver, author)
                assert await home_ids(client, leaver) == []
                chunk_reads_at_first_write.append(readers.count(home.FOLLOWERS_TASK))
            return await real_add(keys, **kwargs)

        monkeypatch.setattr(services.timelines, "add", add)
        await home.fan_out(services, post["id"], author.id)

        # The second chunk was read while the first was being written.
        assert chunk_reads_at_first_write == [2]
        # Every chunk reached, the last one too; nobody who does not read.
        for user in others:
            assert await stored(services, home_key(user.id)) == [post["id"]]
        assert await stored(services, home_key(idle.id)) is None
        # The write outlived the unfollow; the check after it undid it.
        assert await stored(services, home_key(leaver.id)) is None
        assert await home_ids(client, leaver) == []


async def test_a_post_deleted_while_it_is_fanned_out_stays_out_of_every_timeline(
    settings: Settings, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: a post deleted at once after it was posted stayed in
    thousands of followers' timelines, since the retract job ran between
    two of the fan-out's writes, and each write after it put the id back.
    The fan-out now checks after each write that the post is still there."""
    monkeypatch.setattr(home, "FANOUT_CHUNK", 2)
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        author, *readers = await many_users(services, 7)
        media_id = await a_photo(client, author, services, photos)
        for user in readers:
            await follow(client, user, author)
        for user in readers:
            assert await home_ids(client, user) == []  # their timelines exist
        await run_jobs(services)  # the follows' backstops, out of the way
        post = await a_post(client, author, media_id, caption="Gone soon #brief")
        real_add = services.timelines.add
        writes = 0

        async def add(keys: Sequence[str], **kwargs: Any) -> list[str]:
            nonlocal writes
            if any(key.startswith("home:") for key in keys) and key_of_reader(keys):
                writes += 1
                if writes == 2:
                    # Between the first chunk's write and the second's: the
                    # post is deleted and its retract job runs to the end.
                    await delete(client, author, post["id"])
                    await run_jobs(services)
            return await real_add(keys, **kwargs)

        def key_of_reader(keys: Sequence[str]) -> bool:
            return any(key == home_key(user.id) for user in readers for key in keys)

        monkeypatch.setattr(services.timelines, "add", add)
        await home.fan_out(services, post["id"], author.id)

        for user in (author, *readers):
            assert post["id"] not in (await stored(services, home_key(user.id)) or [])
        for key in home._own_keys(author.id, ["brief"]):
            assert post["id"] not in (await stored(services, key) or [])
        assert writes == 2  # the fan-out stopped at the chunk that saw it
