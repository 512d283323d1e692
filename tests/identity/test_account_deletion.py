"""An account deleted by its owner takes everything of theirs with it.

Found by a trial: there was no way to delete an account, and one deleted
in the database failed on PostgreSQL (a photo's row was reached before the
post's link to it) and left the counts it was part of wrong.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from petpal.platform.services import Services
from tests.factories import (
    PASSWORD,
    User,
    a_ready_photo,
    a_user,
    assert_problem,
    drain_jobs,
    variant_paths,
)
from tests.pets.helpers import OF_THE_DAY, a_pet
from tests.social.builders import a_post

ME = "/api/v1/accounts/me"
PHOTO = "camera-exif/orientation_1_landscape.jpg"


async def _delete(
    client: httpx.AsyncClient, user: User, password: str = PASSWORD
) -> httpx.Response:
    return await client.request(
        "DELETE", ME, headers=user.headers, json={"password": password}
    )


async def _ids(client: httpx.AsyncClient, url: str, user: User | None = None) -> Any:
    response = await client.get(url, headers=user.headers if user else {})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_deleting_an_account_takes_everything_of_it(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob, carol = [await a_user(client) for _ in range(3)]
    photo = await a_ready_photo(client, alice, services, photos / PHOTO)
    files = await variant_paths(client, photo)
    pet = await a_pet(client, alice, name="Biscuit", photo_media_id=photo)
    theirs = await a_post(client, alice, photo, "Biscuit at the beach #beachdog")
    bobs_photo = await a_ready_photo(client, bob, services, photos / PHOTO)
    bobs = await a_post(client, bob, bobs_photo, "hello @" + alice.username)
    for follower, followee in ((bob, alice), (carol, alice), (alice, bob)):
        followed = await client.post(
            f"/api/v1/accounts/{followee.username}/follow", headers=follower.headers
        )
        assert followed.status_code in (200, 201, 204), followed.text
    for liker, post in ((alice, bobs), (bob, theirs)):
        liked = await client.post(
            f"/api/v1/posts/{post['id']}/like", headers=liker.headers
        )
        assert liked.status_code == 200, liked.text
    commented = await client.post(
        f"/api/v1/posts/{bobs['id']}/comments",
        headers=alice.headers,
        json={"body": "lovely"},
    )
    assert commented.status_code == 201, commented.text
    await drain_jobs(services)
    assert theirs["id"] in await _ids(client, "/api/v1/feed/home", bob)
    assert (await client.get(OF_THE_DAY)).json()["pet"]["id"] == pet["id"]

    # The password is asked again; a wrong one changes nothing.
    wrong = assert_problem(await _delete(client, alice, "not the password"), 401)
    # No login was sent: the detail names the password alone (a trial).
    assert wrong["detail"] == "the password is wrong"
    assert_problem(
        await client.request("DELETE", ME, headers=alice.headers, json={}), 422
    )
    assert_problem(await client.request("DELETE", ME, json={"password": PASSWORD}), 401)
    assert (await client.get(ME, headers=alice.headers)).status_code == 200

    deleted = await _delete(client, alice)
    assert deleted.status_code == 204, deleted.text
    await drain_jobs(services)

    # Gone at once: the account, its sessions, its profile, post, pet, photo.
    assert_problem(await client.get(ME, headers=alice.headers), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token}
    )
    assert_problem(refresh, 401)
    assert_problem(await client.get(f"/api/v1/accounts/{alice.username}"), 404)
    assert_problem(await client.get(f"/api/v1/posts/{theirs['id']}"), 404)
    assert_problem(await client.get(f"/api/v1/pets/{pet['id']}"), 404)
    assert_problem(await client.get(f"/api/v1/media/{photo}"), 404)
    for path in files:
        assert (await client.get(path)).status_code == 404, path
    assert_problem(await client.get(OF_THE_DAY), 404, "no_pet_of_the_day")
    # From every list.
    for url, reader in (
        ("/api/v1/feed/home", bob),
        ("/api/v1/feed/public", None),
        ("/api/v1/feed/trending", None),
        ("/api/v1/tags/beachdog", None),
    ):
        assert theirs["id"] not in await _ids(client, url, reader), url
    # What it did to others is undone, counts included.
    post = (await client.get(f"/api/v1/posts/{bobs['id']}", headers=bob.headers)).json()
    assert (post["like_count"], post["comment_count"]) == (0, 0)
    assert await _ids(client, f"/api/v1/posts/{bobs['id']}/comments") == []
    assert post["mentions"] == []
    for user, follower_count, following_count in ((bob, 0, 0), (carol, 0, 0)):
        profile = (await client.get(f"/api/v1/accounts/{user.username}")).json()
        assert (profile["follower_count"], profile["following_count"]) == (
            follower_count,
            following_count,
        ), profile
    # Bob's own things stay.
    assert bobs["id"] in await _ids(client, "/api/v1/feed/home", bob)
    assert (await client.get(f"/api/v1/media/{bobs_photo}")).status_code == 200
    # The name is free again.
    again = await client.post(
        "/api/v1/accounts",
        json={
            "username": alice.username,
            "email": f"{alice.username}@example.org",
            "password": PASSWORD,
            "display_name": "Someone else",
        },
    )
    assert again.status_code == 201, again.text
    profile = (await client.get(f"/api/v1/accounts/{alice.username}")).json()
    assert profile["display_name"] == "Someone else"
    assert profile["post_count"] == 0
    assert await _ids(client, f"/api/v1/accounts/{alice.username}/posts") == []


async def test_a_photo_processed_while_its_account_goes_leaves_no_file(
    client: httpx.AsyncClient,
    services: Services,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deletion lists the account's files; sizes a job stores after that
    (it was decoding the photo meanwhile) are deleted by the job itself."""
    from petpal.media import service as media_service

    owner = await a_user(client)
    loop = asyncio.get_running_loop()
    real = media_service.process_image

    def process_while_deleted(path: Path, limits: Any) -> Any:
        processed = real(path, limits)
        # The account goes while this job holds the decoded photo.
        gone = asyncio.run_coroutine_threadsafe(_delete(client, owner), loop)
        assert gone.result(timeout=30).status_code == 204
        return processed

    monkeypatch.setattr(media_service, "process_image", process_while_deleted)
    with (photos / PHOTO).open("rb") as photo:
        uploaded = await client.post(
            "/api/v1/media", headers=owner.headers, files={"file": ("a.jpg", photo)}
        )
    assert uploaded.status_code == 202, uploaded.text
    media_id = uploaded.json()["id"]
    await drain_jobs(services)
    await drain_jobs(services)  # and the file deletions the deletion queued
    stored = [b async for b in services.storage.list_objects(f"media/{media_id}/")]
    assert stored == []
    incoming = [b async for b in services.storage.list_objects("incoming/")]
    assert incoming == []


async def test_a_deletion_that_loses_a_deadlock_runs_again(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial, on PostgreSQL: a follow of the account made at the
    same moment deadlocked with the deletion, and the deletion answered 503.
    PostgreSQL's verdict (SQLSTATE 40P01) ends one attempt, not the request."""
    from petpal.identity import service as identity_service

    real = identity_service._delete_account_rows
    attempts: list[int] = []

    class Deadlock(Exception):
        sqlstate = "40P01"

    async def deadlocked_once(services: Services, account: Any) -> list[str]:
        attempts.append(1)
        if len(attempts) == 1:
            raise DBAPIError("DELETE FROM accounts", {}, Deadlock("deadlock detected"))
        return await real(services, account)

    monkeypatch.setattr(identity_service, "_delete_account_rows", deadlocked_once)
    user = await a_user(client)
    deleted = await _delete(client, user)
    assert deleted.status_code == 204, deleted.text
    assert len(attempts) == 2
    assert_problem(await client.get(f"/api/v1/accounts/{user.username}"), 404)
