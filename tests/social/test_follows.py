from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from petpal.platform.jobs import DONE, OutboxJob
from petpal.platform.services import Services
from petpal.social import home
from petpal.social.models import AccountStats
from tests.factories import User, a_user, assert_problem, queries_on
from tests.social.builders import a_member, a_photo, a_post, many_users, walk
from tests.social.test_dead_jobs import home_ids
from tests.social.test_timelines import follow, settle, unfollow


async def test_follow_and_unfollow_are_idempotent_and_counted(
    client: httpx.AsyncClient,
) -> None:
    alice = await a_user(client)
    bob = await a_user(client)
    url = f"/api/v1/accounts/{bob.username}/follow"

    for _ in range(2):
        response = await client.post(url, headers=alice.headers)
        assert response.status_code == 204, response.text
        assert response.content == b""
    bob_profile = await client.get(
        f"/api/v1/accounts/{bob.username}", headers=alice.headers
    )
    assert bob_profile.json()["follower_count"] == 1
    assert bob_profile.json()["followed_by_me"] is True
    alice_profile = await client.get(f"/api/v1/accounts/{alice.username}")
    assert alice_profile.json()["following_count"] == 1

    for _ in range(2):
        assert (await client.delete(url, headers=alice.headers)).status_code == 204
    bob_profile = await client.get(
        f"/api/v1/accounts/{bob.username}", headers=alice.headers
    )
    assert bob_profile.json()["follower_count"] == 0
    assert bob_profile.json()["followed_by_me"] is False
    alice_profile = await client.get(f"/api/v1/accounts/{alice.username}")
    assert alice_profile.json()["following_count"] == 0


async def test_usernames_are_matched_like_at_sign_up(client: httpx.AsyncClient) -> None:
    alice = await a_user(client)
    bob = await a_user(client, "bob_the_dog")
    response = await client.post(
        "/api/v1/accounts/ＢＯＢ_THE_DOG/follow", headers=alice.headers
    )
    assert response.status_code == 204
    followers = await client.get(f"/api/v1/accounts/{bob.username}/followers")
    assert [a["username"] for a in followers.json()["items"]] == [alice.username]


async def test_follow_errors(client: httpx.AsyncClient, services: Services) -> None:
    alice = await a_member(services)
    me = f"/api/v1/accounts/{alice.username}/follow"
    assert_problem(
        await client.post(me, headers=alice.headers), 422, "cannot_follow_self"
    )
    assert_problem(await client.delete(me, headers=alice.headers), 422)
    for name in ("nobody_at_all", "x", "a" * 300, "%00", "ünïcödé"):
        url = f"/api/v1/accounts/{name}/follow"
        assert_problem(await client.post(url, headers=alice.headers), 404, "not_found")
        assert_problem(
            await client.delete(url, headers=alice.headers), 404, "not_found"
        )
    assert_problem(await client.post(me), 401, "unauthorized")
    assert_problem(await client.delete(me), 401, "unauthorized")
    garbage = {"Authorization": "Bearer x.y.z"}
    assert_problem(await client.post(me, headers=garbage), 401, "unauthorized")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert_problem(await client.post(me, headers=basic), 401, "unauthorized")


async def test_follow_lists_page_newest_first_exactly_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    star = await a_member(services)
    fans = await many_users(services, 7)
    for fan in fans:
        response = await client.post(
            f"/api/v1/accounts/{star.username}/follow", headers=fan.headers
        )
        assert response.status_code == 204

    late_fans = iter(await many_users(services, 3))

    async def another_fan_arrives() -> None:
        fan = next(late_fans, None)
        if fan is not None:
            await client.post(
                f"/api/v1/accounts/{star.username}/follow", headers=fan.headers
            )

    followers = await walk(
        client,
        f"/api/v1/accounts/{star.username}/followers",
        between_pages=another_fan_arrives,
    )
    # Newest first; those who arrive during the walk sort before its cursor.
    assert [f["username"] for f in followers] == [f.username for f in reversed(fans)]

    following = await client.get(f"/api/v1/accounts/{fans[0].username}/following")
    assert following.json() == {
        "items": [
            {
                "id": star.id,
                "username": star.username,
                "display_name": star.username,
                "avatar_url": None,
            }
        ],
        "next_cursor": None,
    }
    profile = await client.get(f"/api/v1/accounts/{star.username}")
    assert profile.json()["follower_count"] == 10


async def test_follow_lists_of_unknown_accounts_and_bad_cursors(
    client: httpx.AsyncClient, services: Services
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    for fan in await many_users(services, 3):
        await client.post(
            f"/api/v1/accounts/{alice.username}/follow", headers=fan.headers
        )
        await client.post(
            f"/api/v1/accounts/{bob.username}/follow", headers=fan.headers
        )

    for which in ("followers", "following", "posts"):
        response = await client.get(f"/api/v1/accounts/nobody_here/{which}")
        assert_problem(response, 404, "not_found")

    page = await client.get(
        f"/api/v1/accounts/{alice.username}/followers", params={"limit": 1}
    )
    cursor = page.json()["next_cursor"]
    assert cursor
    # A cursor of one list is refused on every other list.
    for other in (
        f"/api/v1/accounts/{bob.username}/followers",
        f"/api/v1/accounts/{alice.username}/following",
        "/api/v1/feed/public",
        f"/api/v1/accounts/{alice.username}/posts",
    ):
        response = await client.get(other, params={"cursor": cursor})
        assert_problem(response, 400, "invalid_cursor")
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for bad in (tampered, "", "!!!", "a" * 1024, "eyJzIjoiZm9sbG93ZXJzIn0"):
        response = await client.get(
            f"/api/v1/accounts/{alice.username}/followers", params={"cursor": bad}
        )
        assert_problem(response, 400, "invalid_cursor")
    response = await client.get(
        f"/api/v1/accounts/{alice.username}/followers", params={"cursor": "a" * 1025}
    )
    assert_problem(response, 422, "validation_failed")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5", ""])
async def test_page_sizes_out_of_range_are_422(
    client: httpx.AsyncClient, services: Services, limit: str
) -> None:
    alice = await a_member(services)
    for path in (
        f"/api/v1/accounts/{alice.username}/followers",
        f"/api/v1/accounts/{alice.username}/following",
        f"/api/v1/accounts/{alice.username}/posts",
        "/api/v1/feed/public",
        "/api/v1/feed/trending",
        "/api/v1/tags/dog",
    ):
        response = await client.get(path, params={"limit": limit})
        assert_problem(response, 422, "validation_failed")


PROFILE_ROUTE = "/api/v1/accounts/{username}"
FOLLOW_ROUTE = "/api/v1/accounts/{username}/follow"


async def test_followed_by_me_is_cached_and_exact_after_each_change(
    client: httpx.AsyncClient, services: Services
) -> None:
    viewer, target = await a_member(services), await a_member(services)
    profile = f"/api/v1/accounts/{target.username}"
    path = f"{profile}/follow"

    assert (await client.get(profile, headers=viewer.headers)).json()[
        "followed_by_me"
    ] is False
    before = queries_on(PROFILE_ROUTE)
    warm = await client.get(profile, headers=viewer.headers)
    assert warm.json()["followed_by_me"] is False
    assert queries_on(PROFILE_ROUTE) == before  # a warm profile read sends no SQL

    await client.post(path, headers=viewer.headers)
    assert (await client.get(profile, headers=viewer.headers)).json()[
        "followed_by_me"
    ] is True
    await client.delete(path, headers=viewer.headers)
    assert (await client.get(profile, headers=viewer.headers)).json()[
        "followed_by_me"
    ] is False


async def test_the_request_settles_the_follow_job_it_did_itself(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author, reader = await many_users(services, 2)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    assert await home_ids(client, reader) == []  # the reader's timeline exists
    await settle(services)

    await follow(client, reader, author)
    # Shown at once, by the request; its backstop job is recorded done, and
    # no relay or worker ever ran it.
    assert await home_ids(client, reader) == [post["id"]]
    await unfollow(client, reader, author)
    assert await home_ids(client, reader) == []
    async with services.db.read_session() as session:
        jobs = (
            await session.execute(
                select(OutboxJob.status, OutboxJob.attempts).where(
                    OutboxJob.kind == home.FOLLOW_JOB
                )
            )
        ).all()
    assert [tuple(job) for job in jobs] == [(DONE, 0), (DONE, 0)]


async def test_many_follows_and_unfollows_at_once_keep_the_counts_exact(
    client: httpx.AsyncClient, services: Services
) -> None:
    star, *fans = await many_users(services, 41)
    url = f"/api/v1/accounts/{star.username}/follow"

    async def send(method: str, fan: User) -> None:
        response = await client.request(method, url, headers=fan.headers)
        assert response.status_code == 204, response.text

    await asyncio.gather(*(send("POST", fan) for fan in fans))
    leaving = fans[::3]
    await asyncio.gather(
        *(send("DELETE", fan) for fan in leaving),
        *(send("POST", fan) for fan in fans[1::3]),  # again: no change
    )
    staying = len(fans) - len(leaving)
    profile = await client.get(f"/api/v1/accounts/{star.username}")
    assert profile.json()["follower_count"] == staying
    async with services.db.read_session() as session:
        stats = await session.get(AccountStats, star.id)
        assert stats is not None
        assert (stats.follower_count, stats.following_count) == (staying, 0)
        following = await session.scalars(
            select(AccountStats.following_count).where(
                AccountStats.account_id.in_([fan.id for fan in fans])
            )
        )
        assert sorted(following.all()) == [0] * len(leaving) + [1] * staying


async def test_accounts_following_each_other_at_once_keep_exact_counts(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Each follow adds to both accounts' counters in one upsert of two rows;
    pairs following and unfollowing each other at the same moment leave
    every counter exact and every answer a 204."""
    users = await many_users(services, 16)
    pairs = list(zip(users[::2], users[1::2], strict=True))

    async def send(method: str, who: User, whom: User) -> None:
        url = f"/api/v1/accounts/{whom.username}/follow"
        response = await client.request(method, url, headers=who.headers)
        assert response.status_code == 204, response.text

    for method, following in (("POST", 1), ("DELETE", 0), ("POST", 1)):
        await asyncio.gather(
            *(send(method, a, b) for a, b in pairs),
            *(send(method, b, a) for a, b in pairs),
        )
        async with services.db.read_session() as session:
            rows = await session.execute(
                select(AccountStats.follower_count, AccountStats.following_count).where(
                    AccountStats.account_id.in_([user.id for user in users])
                )
            )
            assert sorted(tuple(row) for row in rows) == [(following, following)] * 16


async def test_a_follow_reads_nothing_back_that_it_knows(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The follow's own writes, one read of the followee's posts for the
    follower's timeline, and the follow read again after writing it with the
    backstop recorded done; an unfollow the same. On PostgreSQL each of the
    three is one statement; SQLite has no writes in WITH clauses."""
    reader, author = await many_users(services, 2)
    assert await home_ids(client, reader) == []  # the reader's timeline exists
    await settle(services)
    await client.get(f"/api/v1/accounts/{author.username}")  # the name cached
    # PostgreSQL: the change with its counters and job; posts; follow + done.
    # SQLite: the change, the counters, the job; posts; follow, done.
    expected = 3 + 1 + 2 if services.db.is_sqlite else 1 + 1 + 1
    for action in (follow, unfollow, follow):
        before = queries_on(FOLLOW_ROUTE)
        await action(client, reader, author)
        assert queries_on(FOLLOW_ROUTE) - before == expected, action


async def test_a_follow_leaves_both_accounts_counts_cached_as_they_are(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The upsert's counts are stored: the next profile reads of either
    account send no SQL, and say what the database does."""
    reader, author = await many_users(services, 2)
    profiles = {
        user.id: f"/api/v1/accounts/{user.username}" for user in (reader, author)
    }
    for path in profiles.values():
        assert (await client.get(path)).status_code == 200  # names, counts cached

    for action, following in ((follow, 1), (unfollow, 0), (follow, 1)):
        await action(client, reader, author)
        before = queries_on(PROFILE_ROUTE)
        shown = {
            account_id: (await client.get(path)).json()
            for account_id, path in profiles.items()
        }
        assert queries_on(PROFILE_ROUTE) == before
        assert shown[author.id]["follower_count"] == following
        assert shown[reader.id]["following_count"] == following
        async with services.db.read_session() as session:
            for account_id, profile in shown.items():
                stats = await session.get(AccountStats, account_id)
                assert stats is not None
                assert (profile["follower_count"], profile["following_count"]) == (
                    stats.follower_count,
                    stats.following_count,
                )


# What a deletion of the star takes after its account's row, as the follow
# or unfollow runs: the counters (a follow took them before the account's
# row), or, with the counters held already, the follow's row (an unfollow
# took it, then waited for the counters).
_DELETION_STEPS = {
    "POST": ([], "SELECT account_id FROM account_stats WHERE account_id = :star"),
    "DELETE": (
        ["SELECT account_id FROM account_stats WHERE account_id = :star FOR UPDATE"],
        "SELECT id FROM follows WHERE followee_id = :star AND follower_id = :fan",
    ),
}


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_follow_waits_for_its_accounts_before_anything_else(
    client: httpx.AsyncClient, services: Services, method: str
) -> None:
    """Found by a trial, on PostgreSQL: a follow of an account being
    deleted answered 503. The deletion holds the account's row, then its
    counters and follows; the follow (or unfollow) took those first, and
    waited for the account's row, so each waited for the other. Here a
    transaction does what a deletion does: the follow must wait for it
    holding nothing."""
    if services.db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time")
    fan, star, other = await a_user(client), await a_user(client), await a_user(client)
    url = f"/api/v1/accounts/{star.username}/follow"
    # The star has counters to take, and (for DELETE) the fan a follow.
    assert (await client.post(url, headers=other.headers)).status_code == 204
    if method == "DELETE":
        assert (await client.post(url, headers=fan.headers)).status_code == 204
    held_first, then = _DELETION_STEPS[method]
    ids = {"star": star.id, "fan": fan.id}
    taken_by_the_follow = False
    async with services.db.engine.connect() as connection, connection.begin():
        await connection.execute(
            text("SELECT id FROM accounts WHERE id = :star FOR UPDATE"), ids
        )
        for step in held_first:
            await connection.execute(text(step), ids)
        request = client.request(method, url, headers=fan.headers)
        following = asyncio.create_task(request)
        await asyncio.sleep(0.5)  # the follow runs as far as it can
        try:
            await connection.execute(text(then + " FOR UPDATE NOWAIT"), ids)
        except DBAPIError:
            taken_by_the_follow = True
        # Leaving rolls back, as a deletion that failed would.
    answer = await following
    assert not taken_by_the_follow
    assert answer.status_code == 204, answer.text
