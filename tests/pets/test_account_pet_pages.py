"""An account's first page of pets, served from its cached pet ids.

The account's newest pet ids are cached under ``account-pet-ids:{id}`` and
each pet under ``pet:{id}``; these tests hold that a warm first page costs no
SQL, that every write that changes it shows at once, and that pages past the
cached ids, or larger than them, still come right from the database.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from petpal.pets import service
from petpal.platform.services import Services
from tests.factories import User, assert_problem, page_ids, queries_on
from tests.pets.helpers import PETS, a_pet, walk
from tests.social.builders import a_member

ACCOUNT_PETS = "/api/v1/accounts/{username}/pets"


def pets_url(owner: User) -> str:
    return ACCOUNT_PETS.format(username=owner.username)


async def uncached_walk(
    client: httpx.AsyncClient, services: Services, url: str, limit: int
) -> list[dict[str, Any]]:
    """The whole list as the database gives it, with the cache off."""
    services.cache.enabled = False
    try:
        return await walk(client, url, {"limit": limit})
    finally:
        services.cache.enabled = True


async def test_a_warm_first_page_of_pets_sends_no_sql(
    client: httpx.AsyncClient, services: Services
) -> None:
    owner = await a_member(services)
    created = [(await a_pet(client, owner, name=f"Pet{i}"))["id"] for i in range(3)]
    url = pets_url(owner)
    cold = await client.get(url)
    assert cold.status_code == 200, cold.text

    before = queries_on(ACCOUNT_PETS)
    warm = await client.get(url)
    smaller = await client.get(url, params={"limit": 2})

    assert queries_on(ACCOUNT_PETS) == before
    assert warm.json() == cold.json()
    assert [p["id"] for p in warm.json()["items"]] == created[::-1]
    assert warm.json()["items"][0]["owner"]["username"] == owner.username
    assert [p["id"] for p in smaller.json()["items"]] == created[:0:-1]
    assert smaller.json()["next_cursor"] is not None


async def test_new_changed_and_deleted_pets_show_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    owner = await a_member(services)
    first = await a_pet(client, owner, name="First")
    url = pets_url(owner)
    assert (await page_ids(client, url))[0] == [first["id"]]  # cached now

    second = await a_pet(client, owner, name="Second")
    assert (await page_ids(client, url))[0] == [second["id"], first["id"]]

    renamed = await client.patch(
        f"{PETS}/{first['id']}",
        headers=owner.headers,
        json={"name": "Renamed", "available_for_adoption": True},
    )
    assert renamed.status_code == 200, renamed.text
    listed = (await client.get(url)).json()["items"]
    assert listed[1] == renamed.json()
    assert (listed[1]["name"], listed[1]["available_for_adoption"]) == (
        "Renamed",
        True,
    )

    deleted = await client.delete(f"{PETS}/{second['id']}", headers=owner.headers)
    assert deleted.status_code == 204
    # A page of one is the one pet left, not the gone one's empty place.
    assert await page_ids(client, url, limit=1) == ([first["id"]], None)
    deleted = await client.delete(f"{PETS}/{first['id']}", headers=owner.headers)
    assert deleted.status_code == 204
    assert await page_ids(client, url) == ([], None)


async def test_pages_past_or_larger_than_the_cached_ids(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three cached ids stand in for the route's largest page (100).
    monkeypatch.setattr(service, "ACCOUNT_PET_IDS_MAX", 3)
    owner, other = await a_member(services), await a_member(services)
    await a_pet(client, other, name="NotMine")
    created = [(await a_pet(client, owner, name=f"Pet{i}"))["id"] for i in range(5)]
    url = pets_url(owner)

    for limit in (1, 2, 3, 4, 5, 7):
        truth = await uncached_walk(client, services, url, limit)
        assert [p["id"] for p in truth] == created[::-1]
        assert await walk(client, url, {"limit": limit}) == truth, limit

    # Up to the cached ids' count the first page is theirs, warm; past it, SQL.
    before = queries_on(ACCOUNT_PETS)
    head, cursor = await page_ids(client, url, limit=3)
    assert queries_on(ACCOUNT_PETS) == before
    assert head == created[:1:-1]
    assert cursor is not None
    assert (await page_ids(client, url, limit=4))[0] == created[:0:-1]
    assert queries_on(ACCOUNT_PETS) > before

    # With no more pets than are cached, any limit is served from them.
    for pet_id in created[:2]:
        response = await client.delete(f"{PETS}/{pet_id}", headers=owner.headers)
        assert response.status_code == 204
    assert await page_ids(client, url, limit=100) == (created[:1:-1], None)
    before = queries_on(ACCOUNT_PETS)
    assert await page_ids(client, url, limit=100) == (created[:1:-1], None)
    assert queries_on(ACCOUNT_PETS) == before


async def test_an_account_without_pets_and_an_unknown_account(
    client: httpx.AsyncClient, services: Services
) -> None:
    owner = await a_member(services)
    for _ in range(2):
        assert await page_ids(client, pets_url(owner)) == ([], None)
        assert_problem(await client.get(ACCOUNT_PETS.format(username="nobody")), 404)


async def test_a_pet_created_during_a_load_is_not_hidden_by_it(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = await a_member(services)
    first = await a_pet(client, owner, name="First")
    url = pets_url(owner)
    written: list[str] = []
    get_or_load = services.cache.get_or_load

    async def racing(key: str, load: Any, **options: Any) -> bytes | None:
        async def read_then_create() -> bytes | None:
            value: bytes | None = await load()
            if key.startswith("account-pet-ids:") and not written:
                # Committed after the reader's query, before it stores.
                written.append((await a_pet(client, owner, name="Racing"))["id"])
            return value

        return await get_or_load(key, read_then_create, **options)

    monkeypatch.setattr(services.cache, "get_or_load", racing)
    racing_read = await page_ids(client, url)
    monkeypatch.undo()

    assert racing_read[0] == [first["id"]]  # what the database held when it read
    assert (await page_ids(client, url))[0] == [*written, first["id"]]
