"""A photo nothing shows any more is deleted, its files with it.

Found by a trial: a deleted post's photo stayed served for good (a year's
``Cache-Control: immutable``), and its details readable by anyone. A post
deleted, a pet deleted or given another photo, an avatar changed: each
queues ``media.release``, which deletes the photos no post, pet or avatar
still shows.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.platform.services import Services
from petpal.social import service as social_service
from tests.factories import (
    User,
    a_ready_photo,
    a_user,
    assert_problem,
    drain_jobs,
    variant_paths,
)
from tests.social.builders import a_post

PHOTO = "camera-exif/orientation_1_landscape.jpg"


async def _photo(
    client: httpx.AsyncClient, user: User, services: Services, photos: Path
) -> str:
    return await a_ready_photo(client, user, services, photos / PHOTO)


async def _served(client: httpx.AsyncClient, media_id: str, services: Services) -> bool:
    """Whether the photo is there: its details, each size's file, in storage."""
    details = await client.get(f"/api/v1/media/{media_id}")
    stored = [b async for b in services.storage.list_objects(f"media/{media_id}/")]
    if details.status_code == 404:
        assert stored == [], stored  # gone whole, never in part
        if not services.settings.storage_url:  # no empty folder left on disk
            assert not (services.settings.media_dir / "media" / media_id).exists()
        return False
    assert details.status_code == 200, details.text
    for path in await variant_paths(client, media_id):
        served = await client.get(path)
        assert served.status_code == 200, (path, served.status_code)
    assert stored
    return True


async def test_a_deleted_posts_photo_stops_being_served(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author = await a_user(client)
    media_id = await _photo(client, author, services, photos)
    post = await a_post(client, author, media_id)
    urls = await variant_paths(client, media_id)
    assert await _served(client, media_id, services)

    deleted = await client.delete(f"/api/v1/posts/{post['id']}", headers=author.headers)
    assert deleted.status_code == 204
    await drain_jobs(services)

    assert not await _served(client, media_id, services)
    for path in urls:
        assert (await client.get(path)).status_code == 404, path
    # Its owner sees it gone too, and cannot post it again.
    again = await client.post(
        "/api/v1/posts", headers=author.headers, json={"media_ids": [media_id]}
    )
    assert again.status_code == 422, again.text


async def test_a_photo_shown_elsewhere_stays_until_nothing_shows_it(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    owner = await a_user(client)
    media_id = await _photo(client, owner, services, photos)
    first = await a_post(client, owner, media_id)
    second = await a_post(client, owner, media_id)
    pet = await client.post(
        "/api/v1/pets",
        headers=owner.headers,
        json={"name": "Rex", "species": "dog", "photo_media_id": media_id},
    )
    assert pet.status_code == 201, pet.text
    me = await client.patch(
        "/api/v1/accounts/me", headers=owner.headers, json={"avatar_media_id": media_id}
    )
    assert me.status_code == 200, me.text

    steps = [
        client.delete(f"/api/v1/posts/{first['id']}", headers=owner.headers),
        client.delete(f"/api/v1/posts/{second['id']}", headers=owner.headers),
        client.delete(f"/api/v1/pets/{pet.json()['id']}", headers=owner.headers),
        # The last to show it: the avatar, changed to none.
        client.patch(
            "/api/v1/accounts/me", headers=owner.headers, json={"avatar_media_id": None}
        ),
    ]
    for n, step in enumerate(steps, start=1):
        answer = await step
        assert answer.status_code in (200, 204), answer.text
        await drain_jobs(services)
        assert await _served(client, media_id, services) == (n < len(steps)), n


async def test_a_pets_former_photo_and_an_accounts_former_avatar_go(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    owner = await a_user(client)
    old_pet_photo, new_pet_photo, old_avatar, new_avatar = [
        await _photo(client, owner, services, photos) for _ in range(4)
    ]
    pet = await client.post(
        "/api/v1/pets",
        headers=owner.headers,
        json={"name": "Rex", "species": "dog", "photo_media_id": old_pet_photo},
    )
    for body in ({"avatar_media_id": old_avatar}, {"avatar_media_id": new_avatar}):
        answer = await client.patch(
            "/api/v1/accounts/me", headers=owner.headers, json=body
        )
        assert answer.status_code == 200, answer.text
    changed = await client.patch(
        f"/api/v1/pets/{pet.json()['id']}",
        headers=owner.headers,
        json={"photo_media_id": new_pet_photo},
    )
    assert changed.status_code == 200, changed.text
    # Changing other fields keeps the photo.
    renamed = await client.patch(
        "/api/v1/accounts/me", headers=owner.headers, json={"bio": "hi"}
    )
    assert renamed.status_code == 200, renamed.text
    await drain_jobs(services)

    assert not await _served(client, old_pet_photo, services)
    assert not await _served(client, old_avatar, services)
    assert await _served(client, new_pet_photo, services)
    assert await _served(client, new_avatar, services)
    me = (await client.get("/api/v1/accounts/me", headers=owner.headers)).json()
    assert me["avatar_url"], me


async def test_a_post_of_a_photo_released_meanwhile_is_told_it_is_gone(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a trial: a post that took up a photo while its release
    deleted it got a 409 "retry", which could only fail again."""
    author = await a_user(client)
    media_id = await _photo(client, author, services, photos)
    post = await a_post(client, author, media_id)
    await client.delete(f"/api/v1/posts/{post['id']}", headers=author.headers)
    await drain_jobs(services)
    # The race's order, made certain: the new post's check that the photo
    # is ready passes, as it does when it runs before the release commits.
    check = social_service.require_ready_media
    calls: list[list[str]] = []

    async def passes_first(
        session: AsyncSession, media_ids: list[str], owner_id: str
    ) -> None:
        calls.append(media_ids)
        if len(calls) > 1:
            await check(session, media_ids, owner_id)

    monkeypatch.setattr(social_service, "require_ready_media", passes_first)
    again = await client.post(
        "/api/v1/posts", headers=author.headers, json={"media_ids": [media_id]}
    )
    assert_problem(again, 422, "invalid_media")
    assert len(calls) == 2  # the insert's foreign key failed, then the check
