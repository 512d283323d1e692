from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from petpal.platform.services import Services
from petpal.social.models import (
    Comment,
    Like,
    Post,
    PostMedia,
    PostMention,
    PostTag,
)
from tests.factories import a_user, assert_problem
from tests.social.builders import (
    VARIANT_URL,
    a_member,
    a_photo,
    a_post,
    many_users,
)


async def test_create_read_and_delete_a_post(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_user(client)
    media_id = await a_photo(client, alice, services, photos)

    response = await client.post(
        "/api/v1/posts",
        headers=alice.headers,
        json={"caption": "Walkies #dog", "media_ids": [media_id]},
    )
    assert response.status_code == 201, response.text
    post = response.json()
    assert response.headers["location"] == f"/api/v1/posts/{post['id']}"
    assert post["author"]["username"] == alice.username
    assert post["caption"] == "Walkies #dog"
    assert post["hashtags"] == ["dog"]
    assert [m["id"] for m in post["media"]] == [media_id]
    assert post["media"][0]["variants"][0]["url"] == VARIANT_URL.format(media_id)
    assert post["pets"] == []
    assert (post["like_count"], post["comment_count"]) == (0, 0)
    assert post["liked_by_me"] is False

    anonymous = await client.get(f"/api/v1/posts/{post['id']}")
    assert anonymous.status_code == 200
    assert anonymous.json()["liked_by_me"] is None
    assert anonymous.json()["created_at"] == post["created_at"]

    deleted = await client.delete(f"/api/v1/posts/{post['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert_problem(await client.get(f"/api/v1/posts/{post['id']}"), 404, "not_found")
    again = await client.delete(f"/api/v1/posts/{post['id']}", headers=alice.headers)
    assert_problem(again, 404, "not_found")


async def test_a_post_keeps_the_order_of_its_media(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    first = await a_photo(client, alice, services, photos)
    second = await a_photo(client, alice, services, photos)
    response = await client.post(
        "/api/v1/posts", headers=alice.headers, json={"media_ids": [second, first]}
    )
    assert response.status_code == 201, response.text
    assert [m["id"] for m in response.json()["media"]] == [second, first]
    assert response.json()["caption"] == ""


@pytest.mark.parametrize(
    "caption",
    [
        "👩‍👩‍👧‍👦 family walk 🐕‍🦺 🏳️‍🌈",
        "קפה עם הכלב שלי #כלב",
        "مرحبا بالقطة \u200f#قطة\u200f",
        "e\u0301 (combining) vs é (precomposed)",
        "tabs\tand\nnewlines\r\n kept  ",
        "𝓕𝓪𝓷𝓬𝔂 letters and 🇯🇵 flags",
    ],
)
async def test_captions_come_back_byte_for_byte(
    client: httpx.AsyncClient, services: Services, photos: Path, caption: str
) -> None:
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    post = await a_post(client, alice, media_id, caption)
    assert post["caption"].encode() == caption.encode()
    fetched = await client.get(f"/api/v1/posts/{post['id']}")
    assert fetched.json()["caption"].encode() == caption.encode()
    feed = await client.get("/api/v1/feed/public")
    assert feed.json()["items"][0]["caption"].encode() == caption.encode()


async def test_hashtags_in_several_scripts_are_found_under_their_tag(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    post = await a_post(
        client, alice, media_id, "Au #Café avec #ペット et #कुत्ता, (#DOG) mail#no #123"
    )
    assert post["hashtags"] == ["café", "ペット", "कुत्ता", "dog"]

    for tag in ("café", "CAFÉ", "cafe\u0301", "%23café", "ペット", "कुत्ता", "Dog"):
        response = await client.get(f"/api/v1/tags/{tag}")
        assert response.status_code == 200, (tag, response.text)
        assert [p["id"] for p in response.json()["items"]] == [post["id"]], tag
    for unused in ("cat", "no", "mail"):
        response = await client.get(f"/api/v1/tags/{unused}")
        assert response.json() == {"items": [], "next_cursor": None}
    for invalid in ("123", "two words", "a%23b", "x" * 101, "%00", "-"):
        assert_problem(await client.get(f"/api/v1/tags/{invalid}"), 404, "not_found")


async def test_a_tag_with_a_capital_dotted_i_is_found_as_typed_in_any_case(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Found by a trial: case-folding spells İ as an i with a dot above, so
    #İstanbul had a page of its own, apart from #istanbul and #ISTANBUL."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    turkish = await a_post(client, alice, media_id, "Kediler #İstanbul")
    english = await a_post(client, alice, media_id, "Cats of #Istanbul")
    assert turkish["hashtags"] == english["hashtags"] == ["istanbul"]
    for tag in ("istanbul", "İstanbul", "ISTANBUL", "İSTANBUL"):
        response = await client.get(f"/api/v1/tags/{tag}")
        assert response.status_code == 200, (tag, response.text)
        ids = [p["id"] for p in response.json()["items"]]
        assert ids == [english["id"], turkish["id"]], tag
    # The dotless ı is a letter of its own.
    assert (await client.get("/api/v1/tags/ıstanbul")).json()["items"] == []


async def test_a_tag_spelt_with_a_joiner_is_found_whole(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Found by a trial: ``#گربه‌ها`` ("cats", with a ZWNJ) was stored as
    ``گربه`` ("cat"), and its own page was a 404."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    cats = "گربه\u200cها"
    post = await a_post(client, alice, media_id, f"#{cats} #क्\u200dष")
    assert post["hashtags"] == [cats, "क्\u200dष"]
    page = await client.get(f"/api/v1/tags/{cats}")
    assert [p["id"] for p in page.json()["items"]] == [post["id"]]
    assert (await client.get("/api/v1/tags/گربه")).json()["items"] == []


async def test_mentions_list_only_accounts_that_exist(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob, carol = await many_users(services, 3)
    media_id = await a_photo(client, alice, services, photos)
    caption = (
        f"with @{carol.username} and @{bob.username.upper()}, @nobody_here, "
        f"@{bob.username} and mail@{carol.username}"
    )
    post = await a_post(client, alice, media_id, caption)
    # In order of first mention, each once; an e-mail address is no mention.
    assert post["mentions"] == [carol.username, bob.username]


async def test_only_the_author_deletes_a_post(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    mallory = await a_member(services)
    post = await a_post(client, alice, await a_photo(client, alice, services, photos))
    url = f"/api/v1/posts/{post['id']}"
    assert_problem(await client.delete(url, headers=mallory.headers), 403, "forbidden")
    assert_problem(await client.delete(url), 401, "unauthorized")
    assert (await client.get(url)).status_code == 200


async def test_a_post_deleted_by_several_requests_at_once_is_deleted_by_one(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Found by a trial: on PostgreSQL eight deletions of one post at once
    all answered 204; one deleted it, and the rest should find it gone."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    post = await a_post(client, alice, media_id)
    kept = await a_post(client, alice, media_id)
    url = f"/api/v1/posts/{post['id']}"

    answers = await asyncio.gather(
        *(client.delete(url, headers=alice.headers) for _ in range(8))
    )

    assert sorted(a.status_code for a in answers) == [204] + [404] * 7
    for answer in answers:
        if answer.status_code == 404:
            assert_problem(answer, 404, "not_found")
    profile = await client.get(f"/api/v1/accounts/{alice.username}")
    assert profile.json()["post_count"] == 1
    listed = await client.get(f"/api/v1/accounts/{alice.username}/posts")
    assert [p["id"] for p in listed.json()["items"]] == [kept["id"]]


async def test_deleting_a_post_removes_everything_hanging_off_it(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    post = await a_post(client, alice, media_id, f"#gone with @{bob.username}")
    other = await a_post(client, alice, media_id, "#gone too")
    url = f"/api/v1/posts/{post['id']}"
    assert (await client.post(f"{url}/like", headers=bob.headers)).status_code == 200
    comment = await client.post(
        f"{url}/comments", headers=bob.headers, json={"body": "nice"}
    )
    assert comment.status_code == 201
    await client.post(f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers)

    # Warm every cache and list the post is in.
    lists = [
        "/api/v1/feed/public",
        "/api/v1/feed/trending",
        "/api/v1/tags/gone",
        f"/api/v1/accounts/{alice.username}/posts",
    ]
    for path in [*lists, "/api/v1/feed/home"]:
        response = await client.get(path, headers=bob.headers)
        assert post["id"] in [p["id"] for p in response.json()["items"]], path
    profile = await client.get(f"/api/v1/accounts/{alice.username}")
    assert profile.json()["post_count"] == 2

    assert (await client.delete(url, headers=alice.headers)).status_code == 204

    for path in [*lists, "/api/v1/feed/home"]:
        response = await client.get(path, headers=bob.headers)
        assert [p["id"] for p in response.json()["items"]] == [other["id"]], path
    assert_problem(await client.get(url), 404)
    assert_problem(await client.get(f"{url}/comments"), 404)
    assert_problem(await client.post(f"{url}/like", headers=bob.headers), 404)
    profile = await client.get(f"/api/v1/accounts/{alice.username}")
    assert profile.json()["post_count"] == 1

    async with services.db.read_session() as session:
        for model in (Post, PostMedia, PostTag, PostMention, Like, Comment):
            left = await session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.post_id == post["id"])
                if model is not Post
                else select(func.count()).where(Post.id == post["id"])
            )
            assert left == 0, model


async def test_post_creation_requires_a_token(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    response = await client.post("/api/v1/posts", json={"media_ids": ["x"]})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    response = await client.post(
        "/api/v1/posts",
        headers={"Authorization": "Bearer not.a.token"},
        json={"media_ids": ["x"]},
    )
    assert_problem(response, 401, "unauthorized")


async def test_posts_only_carry_the_authors_own_ready_media(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_member(services)
    bob = await a_member(services)
    mine = await a_photo(client, alice, services, photos)
    theirs = await a_photo(client, bob, services, photos)
    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

    async def attempt(media_ids: list[str]) -> httpx.Response:
        return await client.post(
            "/api/v1/posts", headers=alice.headers, json={"media_ids": media_ids}
        )

    assert_problem(await attempt([theirs]), 422, "invalid_media")
    assert_problem(await attempt([mine, theirs]), 422, "invalid_media")
    assert_problem(await attempt([unknown]), 422, "invalid_media")
    assert_problem(await attempt(["not-an-id"]), 422, "invalid_media")
    assert_problem(await attempt([mine, mine]), 422, "duplicate_media")
    assert_problem(await attempt([]), 422, "validation_failed")
    assert_problem(await attempt([mine] * 11), 422, "validation_failed")
    assert_problem(await attempt(["x" * 65]), 422, "validation_failed")

    async with services.db.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(Post)) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"caption": "x" * 2201}, 422, "validation_failed"),
        ({"caption": "nul \x00 byte"}, 422, "validation_failed"),
        ({"caption": 42}, 422, "validation_failed"),
        ({"caption": None}, 422, "validation_failed"),
        ({"media_ids": "MEDIA"}, 422, "validation_failed"),
        ({"media_ids": [1]}, 422, "validation_failed"),
        ({"pet_ids": "x"}, 422, "validation_failed"),
        ({"pet_ids": ["p"] * 11}, 422, "validation_failed"),
        ({"pet_ids": ["p", "p"]}, 422, "duplicate_pet"),
        ({"author_id": "someone-else"}, 422, "validation_failed"),
        ({"caption": " ".join(f"#t{i}" for i in range(31))}, 422, "too_many_hashtags"),
        # 34 characters, 102 once NFKC spells each ligature out.
        ({"caption": "#" + "\ufb03" * 34}, 422, "hashtag_too_long"),
        ({"caption": "#" + "b" * 101}, 422, "hashtag_too_long"),
        ({"caption": "fine, and #" + "b" * 2000}, 422, "hashtag_too_long"),
    ],
)
async def test_bad_post_bodies_are_refused(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    response = await client.post(
        "/api/v1/posts", headers=alice.headers, json={"media_ids": [media_id], **body}
    )
    assert_problem(response, status, code)


async def test_malformed_and_oversized_bodies(
    client: httpx.AsyncClient, services: Services
) -> None:
    alice = await a_member(services)
    headers = {**alice.headers, "Content-Type": "application/json"}
    for raw in (b"{", b"", b"[]", b"null", b'"text"', b"\xff\xfe"):
        response = await client.post("/api/v1/posts", headers=headers, content=raw)
        assert response.status_code in (400, 422), (raw, response.text)
        assert_problem(response, response.status_code)
    huge = b'{"caption": "' + b"x" * (65 * 1024) + b'", "media_ids": ["a"]}'
    response = await client.post("/api/v1/posts", headers=headers, content=huge)
    assert_problem(response, 413, "body_too_large")


async def test_ids_are_case_insensitive_wherever_a_client_sends_one(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Found by a trial and left alone, done: a ULID's letters are
    case-insensitive (its specification), but a lower-case post id was a
    404. Every id a client sends, in a path or a body, is compared in the
    upper case ids are stored in."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    pet = await client.post(
        "/api/v1/pets",
        headers=alice.headers,
        json={"name": "Rex", "species": "dog", "photo_media_id": media_id.lower()},
    )
    assert pet.status_code == 201, pet.text
    pet_id = pet.json()["id"]
    created = await client.post(
        "/api/v1/posts",
        headers=alice.headers,
        json={
            "caption": "lower",
            "media_ids": [media_id.lower()],
            "pet_ids": [pet_id.lower()],
        },
    )
    assert created.status_code == 201, created.text
    post = created.json()
    assert [pet["id"] for pet in post["pets"]] == [pet_id]
    url = f"/api/v1/posts/{post['id'].lower()}"
    assert (await client.get(url)).json()["id"] == post["id"]
    liked = await client.post(f"{url}/like", headers=alice.headers)
    assert liked.json()["liked"] is True
    comment = await client.post(
        f"{url}/comments", headers=alice.headers, json={"body": "hi"}
    )
    assert comment.status_code == 201, comment.text
    comments = await client.get(f"{url}/comments")
    assert [c["id"] for c in comments.json()["items"]] == [comment.json()["id"]]
    gone = await client.delete(
        f"/api/v1/comments/{comment.json()['id'].lower()}", headers=alice.headers
    )
    assert gone.status_code == 204
    assert (await client.get(f"/api/v1/pets/{pet_id.lower()}")).json()["id"] == pet_id
    media = await client.get(f"/api/v1/media/{media_id.lower()}", headers=alice.headers)
    assert media.json()["id"] == media_id
    profile = await client.patch(
        "/api/v1/accounts/me",
        headers=alice.headers,
        json={"avatar_media_id": media_id.lower()},
    )
    assert profile.status_code == 200, profile.text
    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert_problem(await client.get(f"/api/v1/posts/{post['id']}"), 404)


@pytest.mark.parametrize(
    "post_id",
    ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "x" * 300, "%F0%9F%90%95", "0" * 26],
)
async def test_unknown_and_malformed_post_ids_are_404(
    client: httpx.AsyncClient, services: Services, post_id: str
) -> None:
    alice = await a_member(services)
    url = f"/api/v1/posts/{post_id}"
    assert_problem(await client.get(url), 404, "not_found")
    assert_problem(await client.delete(url, headers=alice.headers), 404, "not_found")
    assert_problem(await client.post(f"{url}/like", headers=alice.headers), 404)
    assert_problem(await client.delete(f"{url}/like", headers=alice.headers), 404)
    assert_problem(await client.get(f"{url}/comments"), 404)
    response = await client.post(
        f"{url}/comments", headers=alice.headers, json={"body": "hi"}
    )
    assert_problem(response, 404)
