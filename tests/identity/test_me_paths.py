"""``me`` in an account's paths names the signed-in account, as
``/accounts/me`` does (found by a trial: ``/accounts/me/pets``,
``/posts``, ``/followers`` were 404 "the account was not found")."""

from __future__ import annotations

from pathlib import Path

import httpx

from petpal.platform.services import Services
from tests.factories import PASSWORD, a_user, assert_problem
from tests.pets.helpers import a_pet
from tests.social.builders import a_photo, a_post

LISTS = ("pets", "posts", "followers", "following")


async def test_me_names_the_callers_own_account(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    alice, bob = await a_user(client), await a_user(client)
    await a_pet(client, alice, name="Scout")
    media_id = await a_photo(client, alice, services, photos)
    await a_post(client, alice, media_id, "walkies")
    followed = await client.post(
        f"/api/v1/accounts/{alice.username}/follow", headers=bob.headers
    )
    assert followed.status_code == 204
    for name in LISTS:
        own = await client.get(f"/api/v1/accounts/me/{name}", headers=alice.headers)
        by_name = await client.get(
            f"/api/v1/accounts/{alice.username}/{name}", headers=alice.headers
        )
        assert own.status_code == 200, (name, own.text)
        assert own.json() == by_name.json(), name
    # Whose lists: bob's own, with bob's token.
    following = await client.get("/api/v1/accounts/me/following", headers=bob.headers)
    assert [a["username"] for a in following.json()["items"]] == [alice.username]


async def test_me_needs_a_token_and_its_account(client: httpx.AsyncClient) -> None:
    alice = await a_user(client)
    for name in LISTS:
        assert_problem(await client.get(f"/api/v1/accounts/me/{name}"), 401)
    deleted = await client.request(
        "DELETE",
        "/api/v1/accounts/me",
        headers=alice.headers,
        json={"password": PASSWORD},
    )
    assert deleted.status_code == 204, deleted.text
    # Its token still verifies, and names an account that is gone.
    for name in LISTS:
        gone = await client.get(f"/api/v1/accounts/me/{name}", headers=alice.headers)
        assert_problem(gone, 401)


async def test_me_is_spelt_as_any_name(client: httpx.AsyncClient) -> None:
    """Found by the final trial: ``ME`` and ``ｍｅ`` were 404s, where
    ``MAYA`` is maya; and following ``me`` was a 404 where following
    oneself by name is a 422."""
    alice = await a_user(client)
    await a_pet(client, alice, name="Scout")
    for spelling in ("ME", "Me", "ｍｅ"):
        pets = await client.get(
            f"/api/v1/accounts/{spelling}/pets", headers=alice.headers
        )
        assert [p["name"] for p in pets.json()["items"]] == ["Scout"], spelling
        profile = await client.get(
            f"/api/v1/accounts/{spelling}", headers=alice.headers
        )
        assert profile.json()["username"] == alice.username, spelling
        assert_problem(await client.get(f"/api/v1/accounts/{spelling}/pets"), 401)
    for method in ("POST", "DELETE"):
        answer = await client.request(
            method, "/api/v1/accounts/me/follow", headers=alice.headers
        )
        by_name = await client.request(
            method, f"/api/v1/accounts/{alice.username}/follow", headers=alice.headers
        )
        assert answer.status_code == by_name.status_code, method
        if answer.status_code != 204:
            assert answer.json()["code"] == by_name.json()["code"], method
