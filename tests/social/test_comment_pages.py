"""A post's first page of comments, served from its cached head.

The head (the oldest comments of a post and whether more exist) is cached
under ``comments-head:{id}``; these tests hold that it costs no SQL once
warm, that every write that changes it shows at once, and that pages past
it, or larger than it, still come right from the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from petpal.platform.ids import new_id
from petpal.platform.services import Services
from petpal.social import service
from petpal.social.models import Comment
from tests.factories import User, assert_problem, page_ids, queries_on
from tests.social.builders import a_member, a_photo, a_post, walk

COMMENTS = "/api/v1/posts/{post_id}/comments"


async def a_commented_post(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    comments: int,
) -> tuple[User, User, str, list[str]]:
    """A post of one member with ``comments`` comments of another: the two
    members, the post's comments URL and the comments' ids, oldest first."""
    author, commenter = await a_member(services), await a_member(services)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    url = COMMENTS.format(post_id=post["id"])
    ids = [await a_comment(client, url, commenter, f"c{i}") for i in range(comments)]
    return author, commenter, url, ids


async def a_comment(client: httpx.AsyncClient, url: str, user: User, body: str) -> str:
    response = await client.post(url, headers=user.headers, json={"body": body})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def uncached_walk(
    client: httpx.AsyncClient, services: Services, url: str, limit: int
) -> list[dict[str, Any]]:
    """The whole list as the database gives it, with the cache off."""
    services.cache.enabled = False
    try:
        return await walk(client, url, limit=limit)
    finally:
        services.cache.enabled = True


async def test_a_warm_first_page_of_comments_sends_no_sql(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    _, commenter, url, ids = await a_commented_post(client, services, photos, 3)
    cold = await client.get(url)
    assert cold.status_code == 200, cold.text

    before = queries_on(COMMENTS)
    warm = await client.get(url)
    smaller = await client.get(url, params={"limit": 2})

    assert queries_on(COMMENTS) == before
    assert warm.json() == cold.json()
    assert [c["id"] for c in warm.json()["items"]] == ids
    assert warm.json()["items"][0]["author"]["username"] == commenter.username
    assert [c["id"] for c in smaller.json()["items"]] == ids[:2]
    assert smaller.json()["next_cursor"] is not None


async def test_new_and_deleted_comments_show_at_once(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author, _, url, ids = await a_commented_post(client, services, photos, 2)
    assert (await page_ids(client, url))[0] == ids  # cached now

    newest = await a_comment(client, url, author, "late")
    assert (await page_ids(client, url))[0] == [*ids, newest]

    deleted = await client.delete(f"/api/v1/comments/{ids[0]}", headers=author.headers)
    assert deleted.status_code == 204
    assert (await page_ids(client, url))[0] == [ids[1], newest]


async def test_a_deleted_post_has_no_comments_page(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author, _, url, ids = await a_commented_post(client, services, photos, 2)
    assert (await page_ids(client, url))[0] == ids
    post_id = url.split("/")[-2]

    deleted = await client.delete(f"/api/v1/posts/{post_id}", headers=author.headers)

    assert deleted.status_code == 204
    for _ in range(2):  # loaded, then cached as "not found"
        assert_problem(await client.get(url), 404, "not_found")
        assert_problem(await client.get(url, params={"limit": 100}), 404)


@pytest.mark.parametrize(
    "post_id",
    [
        pytest.param(new_id(), id="unknown"),
        pytest.param("not-an-id", id="malformed"),
        pytest.param("x" * 300, id="long"),
    ],
)
async def test_comments_of_an_unknown_post_are_404(
    client: httpx.AsyncClient, post_id: str
) -> None:
    url = COMMENTS.format(post_id=post_id)
    for _ in range(2):
        assert_problem(await client.get(url), 404, "not_found")


async def test_pages_past_or_larger_than_the_cached_head(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A head of 3 stands in for the route's largest page (100).
    monkeypatch.setattr(service, "COMMENTS_HEAD_SIZE", 3)
    _, commenter, url, ids = await a_commented_post(client, services, photos, 5)

    for limit in (1, 2, 3, 4, 5, 7):
        truth = await uncached_walk(client, services, url, limit)
        assert [c["id"] for c in truth] == ids
        assert await walk(client, url, limit=limit) == truth, limit

    # Up to the head's size the first page is the head's, warm; past it, SQL.
    before = queries_on(COMMENTS)
    head, cursor = await page_ids(client, url, limit=3)
    assert queries_on(COMMENTS) == before
    assert head == ids[:3]
    assert cursor is not None
    assert (await page_ids(client, url, limit=4))[0] == ids[:4]
    assert queries_on(COMMENTS) > before

    # With no more than the head holds, any limit is served from it.
    for comment_id in ids[3:]:
        response = await client.delete(
            f"/api/v1/comments/{comment_id}", headers=commenter.headers
        )
        assert response.status_code == 204
    assert await page_ids(client, url, limit=100) == (ids[:3], None)
    before = queries_on(COMMENTS)
    assert await page_ids(client, url, limit=100) == (ids[:3], None)
    assert queries_on(COMMENTS) == before


async def test_a_comment_written_during_a_load_is_not_hidden_by_it(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, commenter, url, ids = await a_commented_post(client, services, photos, 1)
    written: list[str] = []
    load_head = services.cache.get_or_load

    async def racing(key: str, load: Any, **options: Any) -> bytes | None:
        async def read_then_comment() -> bytes | None:
            value: bytes | None = await load()
            if key.startswith("comments-head:") and not written:
                # Committed after the reader's query, before it stores.
                written.append(await a_comment(client, url, commenter, "racing"))
            return value

        return await load_head(key, read_then_comment, **options)

    monkeypatch.setattr(services.cache, "get_or_load", racing)
    racing_read = await page_ids(client, url)
    monkeypatch.undo()

    assert racing_read[0] == ids  # what the database held when it read
    assert (await page_ids(client, url))[0] == [*ids, *written]


async def test_a_recount_drops_comments_removed_behind_the_service(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    _, _, url, ids = await a_commented_post(client, services, photos, 2)
    post_id = url.split("/")[-2]
    assert (await page_ids(client, url))[0] == ids
    # As an account's deletion does by cascade, then enqueues a recount.
    async with services.db.write_session() as session:
        await session.execute(delete(Comment).where(Comment.id == ids[0]))

    await service.do_recount(services, [], [post_id])

    assert (await page_ids(client, url))[0] == ids[1:]
