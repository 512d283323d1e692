from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from ulid import ULID

from petpal.platform.db import utcnow
from petpal.platform.pagination import encode_cursor
from petpal.platform.services import Services
from petpal.social import service, trending
from tests.factories import User, a_user, assert_problem, drain_jobs, queries_on
from tests.social.builders import (
    a_member,
    a_photo,
    a_post,
    many_users,
    walk,
)


@contextmanager
def posting_at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> Iterator[None]:
    """Posts made inside carry ``when`` as their time, and ids made then."""
    with monkeypatch.context() as patch:
        patch.setattr(service, "utcnow", lambda: when)
        patch.setattr(service, "new_id", lambda: str(ULID.from_datetime(when)))
        yield


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def like(
    client: httpx.AsyncClient, post: dict[str, Any], fans: list[User]
) -> None:
    for fan in fans:
        response = await client.post(
            f"/api/v1/posts/{post['id']}/like", headers=fan.headers
        )
        assert response.status_code == 200


async def test_home_feed_follows_what_one_follows(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob, carol = await a_user(client), await a_user(client), await a_user(client)
    media = {
        u.id: await a_photo(client, u, services, photos) for u in (alice, bob, carol)
    }
    own = await a_post(client, alice, media[alice.id], "mine")
    by_bob = await a_post(client, bob, media[bob.id], "bob's")
    by_carol = await a_post(client, carol, media[carol.id], "carol's")

    async def home() -> list[str]:
        response = await client.get("/api/v1/feed/home", headers=alice.headers)
        assert response.status_code == 200, response.text
        return ids(response.json()["items"])

    assert await home() == [own["id"]]
    await client.post(f"/api/v1/accounts/{bob.username}/follow", headers=alice.headers)
    assert await home() == [by_bob["id"], own["id"]]
    later = await a_post(client, bob, media[bob.id], "bob again")
    await drain_jobs(services)  # the fan-out to bob's followers is a job
    assert await home() == [later["id"], by_bob["id"], own["id"]]
    await client.delete(
        f"/api/v1/accounts/{bob.username}/follow", headers=alice.headers
    )
    assert await home() == [own["id"]]
    # Carol's post was in the public feed all along.
    public = await client.get("/api/v1/feed/public")
    assert ids(public.json()["items"]) == [
        later["id"],
        by_carol["id"],
        by_bob["id"],
        own["id"],
    ]

    assert_problem(await client.get("/api/v1/feed/home"), 401, "unauthorized")


async def test_every_post_once_across_pages_despite_shared_times_and_new_posts(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    await client.post(f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers)
    instant = utcnow()
    existing = []
    with monkeypatch.context() as patch:
        # Every post of the same instant: only the id can order them.
        patch.setattr(service, "utcnow", lambda: instant)
        for i in range(9):
            existing.append(await a_post(client, alice, media_id, f"#walk {i}"))
    assert len({p["created_at"] for p in existing}) == 1
    newest_first = [p["id"] for p in reversed(existing)]

    async def post_more() -> None:
        await a_post(client, alice, media_id, "#walk arrives during the walk")

    for url, headers in (
        ("/api/v1/feed/public", None),
        ("/api/v1/feed/home", bob.headers),
        ("/api/v1/tags/walk", None),
        (f"/api/v1/accounts/{alice.username}/posts", None),
    ):
        listed = await client.get(url, params={"limit": 100}, headers=headers)
        before = ids(listed.json()["items"])
        seen = await walk(
            client, url, headers=headers, limit=2, between_pages=post_more
        )
        # Exactly what was there when the walk began, each once, in order;
        # the posts made during the walk are newer than its first page.
        assert ids(seen) == before, url
        assert set(newest_first) <= set(before), url


async def test_a_deleted_post_drops_out_of_a_walk_in_progress(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    posts = [await a_post(client, alice, media_id) for _ in range(6)]
    first = await client.get("/api/v1/feed/public", params={"limit": 2})
    assert ids(first.json()["items"]) == [posts[5]["id"], posts[4]["id"]]
    await client.delete(f"/api/v1/posts/{posts[2]['id']}", headers=alice.headers)
    rest = await client.get(
        "/api/v1/feed/public",
        params={"limit": 10, "cursor": first.json()["next_cursor"]},
    )
    assert ids(rest.json()["items"]) == [posts[3]["id"], posts[1]["id"], posts[0]["id"]]
    assert rest.json()["next_cursor"] is None


@pytest.mark.parametrize("limit", ["1.0", " 5", "+5", "5_0", "1e1", "\uff15", "", "-1"])
async def test_a_limit_is_a_count_in_digits(
    client: httpx.AsyncClient, limit: str
) -> None:
    """Left alone, done: ``limit=1.0`` was read as 1, `` 5`` as 5 and ``5_0``
    as 50; a count not written in digits is a 422 naming the parameter."""
    for url in ("/api/v1/feed/public", "/api/v1/feed/trending", "/api/v1/adoptions"):
        response = await client.get(url, params={"limit": limit})
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["location"] == ["query", "limit"], problem
    assert (await client.get("/api/v1/feed/public?limit=05")).status_code == 200


@pytest.mark.parametrize(
    "query", ["limit=5&limit=50", "limit=5&l%69mit=5", "cursor=&limit=2&cursor="]
)
async def test_a_parameter_given_twice_is_422(
    client: httpx.AsyncClient, query: str
) -> None:
    """Left alone, done: the last of two values was taken and the other
    dropped unsaid; the client is told which parameter it repeated."""
    for url in ("/api/v1/feed/public", "/api/v1/adoptions"):
        problem = assert_problem(await client.get(f"{url}?{query}"), 422)
        assert problem["errors"][0]["location"][0] == "query", problem
    # What the path names comes first.
    assert_problem(await client.get(f"/api/v1/nowhere?{query}"), 404)
    assert_problem(await client.delete(f"/api/v1/feed/public?{query}"), 405)
    # Found by a trial: parameters a route does not read were refused too
    # (on /healthz, /metrics, the docs), and before a 401; they are
    # ignored, repeated or not, as they are once.
    for url in ("/healthz", "/openapi.json", "/api/v1/feed/public"):
        assert (await client.get(f"{url}?x=1&x=2&=&=")).status_code == 200
    assert_problem(await client.get(f"/api/v1/accounts/me?{query}"), 401)
    assert (await client.get("/api/v1/feed/public?limit=5&cursor=")).status_code in (
        200,
        400,
    )


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/v1/adoptions?location=%ff", "location"),
        ("/api/v1/adoptions?species=dog&location=Ber%C3", "location"),
        ("/api/v1/feed/public?cursor=%80abc", "cursor"),
    ],
)
async def test_a_parameter_whose_escapes_are_no_utf8_text_is_422(
    client: httpx.AsyncClient, url: str, name: str
) -> None:
    """Found by a trial: ``?location=%ff`` searched for U+FFFD, which
    Starlette puts in place of bytes that are no UTF-8, and found nothing
    (a 200)."""
    problem = assert_problem(await client.get(url), 422)
    assert problem["errors"][0]["location"] == ["query", name], problem
    # Text that is UTF-8, escaped or not, is read as ever.
    good = await client.get("/api/v1/adoptions?location=%C4%B0stanbul")
    assert good.status_code == 200, good.text
    # A parameter the route does not read is ignored, as it was.
    ignored = await client.get("/api/v1/feed/public?x=%ff")
    assert ignored.status_code == 200, ignored.text


async def test_signed_but_nonsensical_cursors_are_400(
    client: httpx.AsyncClient, services: Services
) -> None:
    for scope, key, url in (
        ("public", {"id": "garbage"}, "/api/v1/feed/public"),
        ("public", {"id": 5}, "/api/v1/feed/public"),
        ("public", {}, "/api/v1/feed/public"),
        ("trending", {"snapshot": "nope", "at": 2}, "/api/v1/feed/trending"),
        ("trending", {"snapshot": str(ULID()), "at": -1}, "/api/v1/feed/trending"),
        ("trending", {"snapshot": str(ULID()), "at": True}, "/api/v1/feed/trending"),
        ("trending", {"snapshot": str(ULID()), "at": 10**9}, "/api/v1/feed/trending"),
        ("trending", {"snapshot": str(ULID()), "at": "2"}, "/api/v1/feed/trending"),
        ("tag:cat", {"id": str(ULID())}, "/api/v1/tags/dog"),
    ):
        cursor = encode_cursor(services.secret, scope, key)
        response = await client.get(url, params={"cursor": cursor})
        assert_problem(response, 400, "invalid_cursor")
    # Well-formed, but no such snapshot (or it expired): the walk is over.
    ended = encode_cursor(
        services.secret, "trending", {"snapshot": str(ULID()), "at": 2}
    )
    response = await client.get("/api/v1/feed/trending", params={"cursor": ended})
    assert_problem(response, 400, "walk_expired")
    forged = encode_cursor("not-our-secret", "public", {"id": str(ULID())})
    response = await client.get("/api/v1/feed/public", params={"cursor": forged})
    assert_problem(response, 400, "invalid_cursor")


def test_event_weights_halve_every_half_life_in_any_week() -> None:
    week = 2900
    start = week * trending.EPOCH_MINUTES  # in minutes since the Unix epoch
    now = start + 3000
    assert trending.decayed_weight(1, start, week) == 1.0
    half_life_ago = now - trending.HALF_LIFE_MINUTES
    assert trending.decayed_weight(2, half_life_ago, week) == pytest.approx(
        trending.decayed_weight(1, now, week)
    )
    # Two events weigh in the same ratio whatever the week's epoch, so a
    # ranking rebuilt for a new week keeps the order of the last one.
    for epoch in (week - 1, week, week + 1):
        ratio = trending.decayed_weight(1, now, epoch) / trending.decayed_weight(
            1, now - 300, epoch
        )
        # To within the quantum of a weight (see trending), which is coarsest
        # for the week after: 2**-20 against weights of about 2**-10 here.
        expected = 2 ** (300 / trending.HALF_LIFE_MINUTES)
        assert ratio == pytest.approx(expected, rel=1e-3)


def test_scores_add_up_to_the_bit_in_any_order() -> None:
    """Found by a trial: a score kept up event by event and one rebuilt
    from the rows differed in the last bit (133.2815555244552 against
    133.28155552445523), so two tied posts could swap after a rebuild.
    Weights are whole multiples of 2**-20: any order of adding them, and of
    taking some away again, gives the same bits."""
    generator = random.Random(7)
    week = 2900
    start = week * trending.EPOCH_MINUTES
    for _ in range(50):
        events = [
            trending.decayed_weight(
                generator.choice((1, 2)),
                start + generator.randrange(-72 * 60, trending.EPOCH_MINUTES),
                week,
            )
            for _ in range(generator.randrange(1, 400))
        ]
        undone = generator.sample(events, len(events) // 5)
        kept = list(events)
        for weight in undone:
            kept.remove(weight)
        live = 0.0
        for weight in generator.sample(events, len(events)):
            live += weight
        for weight in undone:
            live -= weight
        rebuilt = 0.0
        for weight in sorted(kept):
            rebuilt += weight
        assert live == rebuilt, (live, rebuilt)
        assert live == math.fsum(kept)


async def test_trending_ranks_recent_engagement_first(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authors = await many_users(services, 5)
    media = [await a_photo(client, a, services, photos) for a in authors]
    fans = await many_users(services, 20)
    now = utcnow()

    with posting_at(monkeypatch, now - timedelta(hours=80)):
        too_old = await a_post(client, authors[0], media[0], "outside the window")
    with posting_at(monkeypatch, now - timedelta(hours=30)):
        old_famous = await a_post(client, authors[1], media[1], "famous long ago")
    with posting_at(monkeypatch, now - timedelta(hours=5)):
        discussed = await a_post(client, authors[2], media[2], "discussed")
    quiet = await a_post(client, authors[3], media[3], "new and quiet")
    liked = await a_post(client, authors[4], media[4], "new and liked")

    # Each event weighs 2**(-hours ago / 12); its post's creation counts 1,
    # a like 1, a comment 2.
    await like(client, too_old, fans)  # liked now, but outside the window
    with posting_at(monkeypatch, now - timedelta(hours=29)):
        await like(client, old_famous, fans[:10])  # 0.18 + 10 × 0.19 ≈ 2.05
    with posting_at(monkeypatch, now - timedelta(hours=4)):
        await client.post(  # 0.75 + 2 × 0.79 ≈ 2.34
            f"/api/v1/posts/{discussed['id']}/comments",
            headers=fans[0].headers,
            json={"body": "wow"},
        )
    await like(client, liked, fans[:2])  # 1 + 2 = 3; quiet: 1

    response = await client.get("/api/v1/feed/trending", headers=fans[0].headers)
    assert response.status_code == 200
    page = response.json()
    assert ids(page["items"]) == [
        liked["id"],
        discussed["id"],
        old_famous["id"],
        quiet["id"],
    ]
    assert page["next_cursor"] is None
    assert [p["liked_by_me"] for p in page["items"]] == [True, False, True, False]
    anonymous = await client.get("/api/v1/feed/trending")
    assert {p["liked_by_me"] for p in anonymous.json()["items"]} == {None}


async def test_trending_caps_each_author_and_pages_one_snapshot(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    prolific, other = await many_users(services, 2)
    fans = await many_users(services, 6)
    prolific_media = await a_photo(client, prolific, services, photos)
    other_media = await a_photo(client, other, services, photos)
    by_prolific = [await a_post(client, prolific, prolific_media) for _ in range(5)]
    by_other = [await a_post(client, other, other_media) for _ in range(4)]
    for i, post in enumerate(by_prolific):
        await like(client, post, fans[: 6 - i])  # all outrank every post of other's

    first = await client.get("/api/v1/feed/trending", params={"limit": 2})
    assert ids(first.json()["items"]) == [by_prolific[0]["id"], by_prolific[1]["id"]]

    # Engagement moves on and the ranking is recomputed meanwhile…
    await like(client, by_other[0], fans)
    await services.cache.invalidate("trending:current")
    fresh = await client.get("/api/v1/feed/trending", params={"limit": 1})
    assert ids(fresh.json()["items"]) == [by_other[0]["id"]]

    # …but a walk that started earlier keeps its snapshot to the end.
    seen = list(first.json()["items"])
    cursor = first.json()["next_cursor"]
    while cursor:
        response = await client.get(
            "/api/v1/feed/trending", params={"limit": 2, "cursor": cursor}
        )
        assert response.status_code == 200, response.text
        seen.extend(response.json()["items"])
        cursor = response.json()["next_cursor"]
    # Three posts at most per author: the quiet ones rank by age, newest first.
    expected = ids(by_prolific[:3]) + ids(by_other[::-1][:3])
    assert ids(seen) == expected

    # A walk whose snapshot is gone (after 15 minutes) must start over.
    await services.walks.clear()
    response = await client.get(
        "/api/v1/feed/trending", params={"cursor": first.json()["next_cursor"]}
    )
    assert_problem(response, 400, "walk_expired")


async def test_trending_is_cached_briefly(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob = await many_users(services, 2)
    media_id = await a_photo(client, alice, services, photos)
    first = await a_post(client, alice, media_id)
    second = await a_post(client, alice, media_id)
    ranked = await client.get("/api/v1/feed/trending")
    assert ids(ranked.json()["items"]) == [second["id"], first["id"]]

    await like(client, first, [bob])
    cached = await client.get("/api/v1/feed/trending")
    assert ids(cached.json()["items"]) == [second["id"], first["id"]]
    # Counts are read fresh even when the order comes from the cache.
    assert cached.json()["items"][1]["like_count"] == 1

    await client.delete(f"/api/v1/posts/{second['id']}", headers=alice.headers)
    after_delete = await client.get("/api/v1/feed/trending")
    assert ids(after_delete.json()["items"]) == [first["id"]]


PUBLIC = "/api/v1/feed/public"


async def test_a_feed_page_costs_the_same_queries_for_5_or_50_posts(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    for i in range(50):
        await a_post(client, alice, media_id, f"#many post {i} @{bob.username}")

    async def cost(limit: int, *, cold: bool) -> float:
        if cold:
            await services.cache.clear()
            await services.timelines.clear()
        before = queries_on(PUBLIC)
        response = await client.get(
            PUBLIC, params={"limit": limit}, headers=bob.headers
        )
        assert len(response.json()["items"]) == limit
        return queries_on(PUBLIC) - before

    # Cold: the timeline's build, the posts' counts, the viewer's likes, the
    # post bodies in one batch, and one look-up per distinct author and media
    # item, whatever the page size.
    assert await cost(5, cold=True) == await cost(50, cold=True) <= 16
    # Warm: the ids from the timeline, everything else from the cache.
    assert await cost(5, cold=False) == await cost(50, cold=False) == 0
