from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from petpal.platform.services import Services
from tests.factories import assert_problem
from tests.social.builders import (
    a_member,
    a_photo,
    a_post,
    many_users,
    walk,
)


async def test_like_and_unlike_are_idempotent(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}/like"

    for _ in range(2):
        response = await client.post(url, headers=bob.headers)
        assert response.status_code == 200
        assert response.json() == {"liked": True, "like_count": 1}
    seen_by_bob = await client.get(f"/api/v1/posts/{post['id']}", headers=bob.headers)
    assert seen_by_bob.json()["liked_by_me"] is True
    assert seen_by_bob.json()["like_count"] == 1
    seen_by_alice = await client.get(
        f"/api/v1/posts/{post['id']}", headers=alice.headers
    )
    assert seen_by_alice.json()["liked_by_me"] is False

    for _ in range(2):
        response = await client.delete(url, headers=bob.headers)
        assert response.status_code == 200
        assert response.json() == {"liked": False, "like_count": 0}
    seen_by_bob = await client.get(f"/api/v1/posts/{post['id']}", headers=bob.headers)
    assert seen_by_bob.json()["liked_by_me"] is False

    assert_problem(await client.post(url), 401, "unauthorized")
    assert_problem(await client.delete(url), 401, "unauthorized")


async def test_fifty_concurrent_likes_count_exactly(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}/like"
    fans = await many_users(services, 50)

    responses = await asyncio.gather(
        *(client.post(url, headers=f.headers) for f in fans)
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sorted(r.json()["like_count"] for r in responses) == list(range(1, 51))
    assert (await client.get(f"/api/v1/posts/{post['id']}")).json()["like_count"] == 50

    # The same account liking 50 times at once is still one like.
    again = await asyncio.gather(
        *(client.post(url, headers=fans[0].headers) for _ in fans)
    )
    assert {r.json()["like_count"] for r in again} == {50}

    # And unliking concurrently, twice each, ends at exactly zero.
    gone = await asyncio.gather(
        *(client.delete(url, headers=f.headers) for f in fans + fans)
    )
    assert all(r.status_code == 200 for r in gone)
    assert (await client.get(f"/api/v1/posts/{post['id']}")).json()["like_count"] == 0


async def test_comments_page_oldest_first_exactly_once(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}/comments"
    bodies = [f"comment {i} 🐾" for i in range(5)]
    for body in bodies:
        response = await client.post(url, headers=bob.headers, json={"body": body})
        assert response.status_code == 201, response.text
        comment = response.json()
        assert comment["post_id"] == post["id"]
        assert comment["author"]["username"] == bob.username
        assert comment["body"] == body

    more = iter(["late 1", "late 2"])

    async def someone_comments() -> None:
        body = next(more, None)
        if body is not None:
            await client.post(url, headers=alice.headers, json={"body": body})

    comments = await walk(client, url, between_pages=someone_comments)
    # Oldest first, so comments added during the walk come at its end.
    assert [c["body"] for c in comments] == [*bodies, "late 1", "late 2"]
    assert len({c["id"] for c in comments}) == 7
    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["comment_count"] == 7


async def test_who_may_delete_a_comment(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author = await a_member(services)
    commenter = await a_member(services)
    stranger = await a_member(services)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    url = f"/api/v1/posts/{post['id']}/comments"

    async def a_comment() -> str:
        response = await client.post(
            url, headers=commenter.headers, json={"body": "hi"}
        )
        assert response.status_code == 201
        return str(response.json()["id"])

    first, second = await a_comment(), await a_comment()
    response = await client.delete(
        f"/api/v1/comments/{first}", headers=stranger.headers
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await client.delete(f"/api/v1/comments/{first}"), 401)

    deleted = await client.delete(
        f"/api/v1/comments/{first}", headers=commenter.headers
    )
    assert deleted.status_code == 204
    deleted = await client.delete(f"/api/v1/comments/{second}", headers=author.headers)
    assert deleted.status_code == 204
    again = await client.delete(f"/api/v1/comments/{second}", headers=author.headers)
    assert_problem(again, 404, "not_found")

    assert (await client.get(url)).json() == {"items": [], "next_cursor": None}
    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["comment_count"] == 0


async def test_concurrent_comments_and_deletes_keep_the_count_exact(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author = await a_member(services)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    url = f"/api/v1/posts/{post['id']}/comments"
    people = await many_users(services, 20)
    created = await asyncio.gather(
        *(client.post(url, headers=p.headers, json={"body": "woof"}) for p in people)
    )
    assert all(r.status_code == 201 for r in created)
    ids = [r.json()["id"] for r in created]
    # Everyone deletes their own comment twice, at once; the author removes
    # the same ones too.
    deletes = await asyncio.gather(
        *(
            client.delete(f"/api/v1/comments/{cid}", headers=h)
            for cid, person in zip(ids[:10], people[:10], strict=True)
            for h in (person.headers, person.headers, author.headers)
        )
    )
    assert sorted(r.status_code for r in deletes) == [204] * 10 + [404] * 20
    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["comment_count"] == 10


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"body": ""}, "validation_failed"),
        ({"body": "  \n\t "}, "validation_failed"),
        ({"body": "\u200b\u2060"}, "validation_failed"),
        ({"body": "x" * 1001}, "validation_failed"),
        ({"body": None}, "validation_failed"),
        ({"body": 7}, "validation_failed"),
        ({"body": ["a"]}, "validation_failed"),
        ({"body": "a\x00b"}, "validation_failed"),
        ({}, "validation_failed"),
        ({"body": "ok", "post_id": "other"}, "validation_failed"),
    ],
)
async def test_bad_comment_bodies_are_422(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    body: dict[str, object],
    code: str,
) -> None:
    alice = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    response = await client.post(
        f"/api/v1/posts/{post['id']}/comments", headers=alice.headers, json=body
    )
    assert_problem(response, 422, code)


async def test_comment_edge_cases(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}/comments"
    longest = "ش" * 999 + "🐕"
    response = await client.post(url, headers=alice.headers, json={"body": longest})
    assert response.status_code == 201
    assert response.json()["body"] == longest

    headers = {**alice.headers, "Content-Type": "application/json"}
    assert_problem(await client.post(url, headers=headers, content=b"{"), 400)
    huge = b'{"body": "' + b"x" * (64 * 1024) + b'"}'
    assert_problem(await client.post(url, headers=headers, content=huge), 413)
    assert_problem(await client.post(url, json={"body": "hi"}), 401)

    for comment_id in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "é" * 26):
        response = await client.delete(
            f"/api/v1/comments/{comment_id}", headers=alice.headers
        )
        assert_problem(response, 404, "not_found")

    await client.post(url, headers=alice.headers, json={"body": "second"})
    cursor = (await client.get(url, params={"limit": 1})).json()["next_cursor"]
    assert cursor
    other_post = await a_post(client, alice, post["media"][0]["id"])
    response = await client.get(
        f"/api/v1/posts/{other_post['id']}/comments", params={"cursor": cursor}
    )
    assert_problem(response, 400, "invalid_cursor")
