"""Editing a post's caption: hashtags and mentions follow it, every page
shows the new text at once, and lists keep their order and cursors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.social.feeds import tag_key
from tests.factories import User, assert_problem
from tests.social.builders import (
    a_member,
    a_photo,
    a_post,
    an_app,
    many_users,
    run_jobs,
    settle,
    stored,
    walk,
)


async def edit(
    client: httpx.AsyncClient, user: User, post_id: str, caption: str
) -> httpx.Response:
    return await client.patch(
        f"/api/v1/posts/{post_id}", json={"caption": caption}, headers=user.headers
    )


async def tag_ids(client: httpx.AsyncClient, tag: str) -> list[str]:
    response = await client.get(f"/api/v1/tags/{tag}")
    assert response.status_code == 200, response.text
    return [post["id"] for post in response.json()["items"]]


async def test_an_edited_caption_shows_everywhere_with_its_tags_and_mentions(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob, carol, reader = await many_users(services, 4)
    followed = await client.post(
        f"/api/v1/accounts/{alice.username}/follow", headers=reader.headers
    )
    assert followed.status_code == 204
    post = await a_post(
        client,
        alice,
        await a_photo(client, alice, services, photos),
        f"#dog #beach with @{bob.username}",
    )
    await settle(services)
    assert post["edited_at"] is None
    # Every page has read (and cached) the post, and the tags' timelines exist.
    pages = [
        f"/api/v1/posts/{post['id']}",
        "/api/v1/feed/home",
        "/api/v1/feed/public",
        f"/api/v1/accounts/{alice.username}/posts",
    ]
    for url in pages:
        assert (await client.get(url, headers=reader.headers)).status_code == 200
    assert await tag_ids(client, "dog") == [post["id"]]
    assert await tag_ids(client, "beach") == [post["id"]]
    assert await tag_ids(client, "cat") == []
    assert await stored(services, tag_key("beach")) == [post["id"]]

    response = await edit(
        client, alice, post["id"], f"#dog #cat, not the beach, with @{carol.username}"
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["caption"].startswith("#dog #cat")
    assert edited["hashtags"] == ["dog", "cat"]
    assert edited["mentions"] == [carol.username]
    assert edited["edited_at"] is not None
    assert edited["created_at"] == post["created_at"]
    assert edited["id"] == post["id"]

    # At once, before any job runs: the post, every feed, every tag page.
    for url in pages:
        body = (await client.get(url, headers=reader.headers)).json()
        shown = body if "items" not in body else body["items"][0]
        assert shown["caption"] == edited["caption"], url
        assert shown["mentions"] == [carol.username], url
        assert shown["edited_at"] == edited["edited_at"], url
    assert await tag_ids(client, "dog") == [post["id"]]
    assert await tag_ids(client, "cat") == [post["id"]]
    assert await tag_ids(client, "beach") == []
    await settle(services)
    assert await tag_ids(client, "beach") == []
    assert await tag_ids(client, "cat") == [post["id"]]


async def test_only_the_author_edits_and_bad_captions_are_refused(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob = await many_users(services, 2)
    post = await a_post(
        client, alice, await a_photo(client, alice, services, photos), "#dog"
    )
    url = f"/api/v1/posts/{post['id']}"
    assert_problem(await edit(client, bob, post["id"], "mine now"), 403, "forbidden")
    assert_problem(await client.patch(url, json={"caption": "x"}), 401)
    assert_problem(await edit(client, alice, "01" + "0" * 24, "gone"), 404)
    assert_problem(await edit(client, alice, "not-an-id", "gone"), 404)
    too_many = " ".join(f"#tag{i}" for i in range(31))
    assert_problem(await edit(client, alice, post["id"], too_many), 422)
    assert_problem(await edit(client, alice, post["id"], "x" * 2201), 422)
    lone_surrogate = await client.patch(
        url,
        content=b'{"caption": "\\ud800"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert_problem(lone_surrogate, 422)
    for body in ({}, {"caption": None}, {"caption": "x", "media_ids": []}, []):
        response = await client.patch(url, json=body, headers=alice.headers)
        assert_problem(response, 422)
    # Nothing of that changed the post.
    after = (await client.get(url)).json()
    assert (after["caption"], after["hashtags"], after["edited_at"]) == (
        "#dog",
        ["dog"],
        None,
    )
    # An empty caption is a caption.
    cleared = await edit(client, alice, post["id"], "")
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["caption"], cleared.json()["hashtags"]) == ("", [])
    assert await tag_ids(client, "dog") == []


async def test_edits_while_lists_are_walked_repeat_or_skip_nothing(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """An edit keeps the post's id, so a walk across edits (and a post
    moving between hashtag pages) sees each post once, in order."""
    author = await a_member(services)
    media = await a_photo(client, author, services, photos)
    posts = [
        (await a_post(client, author, media, f"#walk number {i}"))["id"]
        for i in range(12)
    ]
    await settle(services)
    edits = iter(range(len(posts)))

    async def edit_some() -> None:
        i = next(edits)
        # Out of the hashtag and back in: it stays in the public feed.
        response = await edit(client, author, posts[i], f"now #other {i}")
        assert response.status_code == 200, response.text
        response = await edit(client, author, posts[i], f"#walk again {i}")
        assert response.status_code == 200, response.text

    for url in (
        "/api/v1/feed/public",
        f"/api/v1/accounts/{author.username}/posts",
        "/api/v1/tags/walk",
    ):
        edits = iter(range(len(posts)))
        seen = await walk(client, url, limit=2, between_pages=edit_some)
        assert [p["id"] for p in seen] == posts[::-1], url


async def test_concurrent_edits_leave_one_caption_and_its_own_tags(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author = await a_member(services)
    post = await a_post(
        client, author, await a_photo(client, author, services, photos), "#start"
    )
    captions = [f"#edit{i} #shared" for i in range(8)]
    answers: list[Any] = await asyncio.gather(
        *(edit(client, author, post["id"], caption) for caption in captions)
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    await settle(services)
    final = (await client.get(f"/api/v1/posts/{post['id']}")).json()
    assert final["caption"] in captions
    winner = captions.index(final["caption"])
    assert final["hashtags"] == [f"edit{winner}", "shared"]
    for i in range(8):
        assert await tag_ids(client, f"edit{i}") == ([post["id"]] * (i == winner))
    assert await tag_ids(client, "shared") == [post["id"]]
    assert await tag_ids(client, "start") == []


async def test_the_request_itself_moves_the_post_between_tag_pages(
    settings: Settings, photos: Path
) -> None:
    """Without waiting for its job: the pages are right as soon as the edit
    answers (jobs are not run here until the end)."""
    async with an_app(settings, run_jobs_in_process=False) as (client, services):
        author = await a_member(services)
        media = await a_photo(client, author, services, photos)
        post = await a_post(client, author, media, "#before")
        assert await tag_ids(client, "before") == [post["id"]]
        assert await tag_ids(client, "after") == []

        assert (await edit(client, author, post["id"], "#after")).status_code == 200
        assert await tag_ids(client, "before") == []
        assert await tag_ids(client, "after") == [post["id"]]
        await run_jobs(services)
        assert await tag_ids(client, "before") == []
        assert await tag_ids(client, "after") == [post["id"]]
