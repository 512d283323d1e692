"""The reads rendered straight to JSON answer exactly their declared models.

Post pages, posts, comment pages, profiles and an account's pets are built
as plain dicts and rendered once (``petpal.platform.wire``), not through
their response models. Each answer here, with every part filled in (an
avatar, a mention, a tagged pet with a photo, a like), must be what its
model would have written: validating it and writing it back gives the same
JSON, field for field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from petpal.identity.schemas import Profile
from petpal.pets.schemas import PetView
from petpal.platform.pagination import Page
from petpal.platform.services import Services
from petpal.social.schemas import CommentView, PostView
from tests.factories import a_user
from tests.social.builders import a_photo


def as_model_writes_it(model: type[BaseModel], response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert model.model_validate(body).model_dump(mode="json") == body
    return body


async def test_post_pages_posts_and_profiles_match_their_models(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice = await a_user(client)
    bob = await a_user(client)
    avatar = await a_photo(client, alice, services, photos)
    changed = await client.patch(
        "/api/v1/accounts/me", headers=alice.headers, json={"avatar_media_id": avatar}
    )
    assert changed.status_code == 200, changed.text
    pet_photo = await a_photo(client, alice, services, photos)
    pet = await client.post(
        "/api/v1/pets",
        headers=alice.headers,
        json={
            "name": "Rex",
            "species": "dog",
            "breed": "Beagle",
            "birth_date": "2021-05-04",
            "bio": "Loves walks",
            "photo_media_id": pet_photo,
            "available_for_adoption": True,
            "location": "Lyon",
        },
    )
    assert pet.status_code == 201, pet.text
    created = await client.post(
        "/api/v1/posts",
        headers=alice.headers,
        json={
            "caption": f"Walkies with @{bob.username} #dog",
            "media_ids": [await a_photo(client, alice, services, photos)],
            "pet_ids": [pet.json()["id"]],
        },
    )
    post = as_model_writes_it(PostView, created)
    follow = await client.post(
        f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers
    )
    assert follow.status_code == 204, follow.text
    like = await client.post(f"/api/v1/posts/{post['id']}/like", headers=bob.headers)
    assert like.status_code == 200, like.text
    comment = await client.post(
        f"/api/v1/posts/{post['id']}/comments",
        headers=bob.headers,
        json={"body": "Good dog"},
    )
    assert comment.status_code == 201, comment.text

    seen = as_model_writes_it(
        PostView, await client.get(f"/api/v1/posts/{post['id']}", headers=bob.headers)
    )
    # Every part is there, so every part's shape was checked.
    assert seen["author"]["avatar_url"] is not None
    assert seen["mentions"] == [bob.username]
    assert seen["hashtags"] == ["dog"]
    assert seen["pets"][0]["photo_url"] is not None
    assert seen["media"][0]["variants"]
    assert (seen["like_count"], seen["liked_by_me"]) == (1, True)
    assert seen["created_at"].endswith("Z")
    anonymous = as_model_writes_it(
        PostView, await client.get(f"/api/v1/posts/{post['id']}")
    )
    assert anonymous["liked_by_me"] is None

    for path in (
        "/api/v1/feed/home",
        "/api/v1/feed/public",
        "/api/v1/feed/trending",
        "/api/v1/tags/dog",
        f"/api/v1/accounts/{alice.username}/posts",
    ):
        page = as_model_writes_it(
            Page[PostView], await client.get(path, headers=bob.headers)
        )
        assert [item["id"] for item in page["items"]] == [post["id"]], path
        assert page["items"][0] == seen, path

    comments = as_model_writes_it(
        Page[CommentView],
        await client.get(f"/api/v1/posts/{post['id']}/comments", headers=bob.headers),
    )
    assert comments["items"] == [comment.json()]
    assert comments["items"][0]["author"]["username"] == bob.username
    assert comments["items"][0]["created_at"].endswith("Z")

    profile = as_model_writes_it(
        Profile,
        await client.get(f"/api/v1/accounts/{alice.username}", headers=bob.headers),
    )
    assert profile["followed_by_me"] is True
    assert profile["avatar_url"] == seen["author"]["avatar_url"]
    assert (profile["follower_count"], profile["post_count"]) == (1, 1)
    assert profile["created_at"].endswith("Z")
    own = as_model_writes_it(
        Profile,
        await client.get(f"/api/v1/accounts/{alice.username}", headers=alice.headers),
    )
    assert own["followed_by_me"] is None

    pets = as_model_writes_it(
        Page[PetView], await client.get(f"/api/v1/accounts/{alice.username}/pets")
    )
    # The same as the pet's own answer, which its model renders.
    assert pets["items"] == [pet.json()]
    assert pets["items"][0]["owner"]["avatar_url"] == seen["author"]["avatar_url"]
    assert pets["items"][0]["photo"]["variants"]
    assert pets["items"][0]["birth_date"] == "2021-05-04"
    assert pets["items"][0]["created_at"].endswith("Z")
