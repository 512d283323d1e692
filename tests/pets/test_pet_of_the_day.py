"""Pet of the Day: one fair pick per UTC day, kept all day, served from the cache."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from petpal.pets import service
from petpal.pets.models import Pet, PetOfTheDay
from petpal.platform.db import queries_in_scope
from petpal.platform.services import Services
from tests.factories import User, a_user, assert_problem
from tests.pets.helpers import OF_THE_DAY, PETS, a_pet, a_photo


def _freeze_clock(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(service, "utcnow", lambda: moment)


async def _pets_with_photo(
    client: httpx.AsyncClient, owner: User, photo_id: str, count: int
) -> list[str]:
    return [
        (await a_pet(client, owner, name=f"Star{i}", photo_media_id=photo_id))["id"]
        for i in range(count)
    ]


async def _todays_pick(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    response = await client.get(OF_THE_DAY, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> User:
    return await a_user(client)


@pytest.fixture
async def photo_id(
    client: httpx.AsyncClient, owner: User, services: Services, photos: Path
) -> str:
    return await a_photo(client, owner, services, photos)


async def test_no_pet_of_the_day_until_a_pet_has_a_photo(
    client: httpx.AsyncClient, owner: User, photo_id: str
) -> None:
    await a_pet(client, owner, name="NoPhoto")

    assert_problem(await client.get(OF_THE_DAY), 404, "no_pet_of_the_day")

    star = await a_pet(client, owner, name="Star", photo_media_id=photo_id)
    await asyncio.sleep(service.NO_PICK_TTL * 1.2)  # "nobody yet" is cached briefly
    assert (await _todays_pick(client))["pet"]["id"] == star["id"]


async def test_the_same_pet_for_everyone_all_day(
    client: httpx.AsyncClient,
    services: Services,
    owner: User,
    photo_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _freeze_clock(monkeypatch, datetime(2031, 5, 6, 0, 0, 1, tzinfo=UTC))
    await _pets_with_photo(client, owner, photo_id, 3)
    alice, bob = await a_user(client), await a_user(client)

    first = await _todays_pick(client)
    assert first["date"] == "2031-05-06"
    assert first["pet"]["photo"]["id"] == photo_id
    assert first["pet"] == (await client.get(f"{PETS}/{first['pet']['id']}")).json()
    assert await _todays_pick(client, **alice.headers) == first
    assert await _todays_pick(client, **bob.headers) == first

    # New pets, an emptied cache and the end of the day change nothing: the
    # pick is stored, not only cached.
    await _pets_with_photo(client, owner, photo_id, 5)
    await services.cache.clear()
    _freeze_clock(monkeypatch, datetime(2031, 5, 6, 23, 59, 59, tzinfo=UTC))
    assert await _todays_pick(client, **alice.headers) == first

    _freeze_clock(monkeypatch, datetime(2031, 5, 7, 0, 0, 0, tzinfo=UTC))
    assert (await _todays_pick(client))["date"] == "2031-05-07"


async def test_a_cached_pick_costs_no_query(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    await _pets_with_photo(client, owner, photo_id, 2)
    first = await service.get_pet_of_the_day(services)

    counter = [0]
    token = queries_in_scope.set(counter)
    try:
        again = await service.get_pet_of_the_day(services)
    finally:
        queries_in_scope.reset(token)

    assert again == first
    assert counter == [0]


async def test_deleting_the_pick_picks_again(
    client: httpx.AsyncClient, owner: User, photo_id: str
) -> None:
    stars = await _pets_with_photo(client, owner, photo_id, 3)
    first = (await _todays_pick(client))["pet"]["id"]

    deleted = await client.delete(f"{PETS}/{first}", headers=owner.headers)
    assert deleted.status_code == 204

    second = (await _todays_pick(client))["pet"]["id"]
    assert second != first
    assert second in stars
    assert (await _todays_pick(client))["pet"]["id"] == second


async def test_removing_the_picks_photo_picks_again(
    client: httpx.AsyncClient, owner: User, photo_id: str
) -> None:
    stars = await _pets_with_photo(client, owner, photo_id, 2)
    first = (await _todays_pick(client))["pet"]["id"]

    response = await client.patch(
        f"{PETS}/{first}", headers=owner.headers, json={"photo_media_id": None}
    )
    assert response.status_code == 200

    second = (await _todays_pick(client))["pet"]["id"]
    assert second == next(s for s in stars if s != first)


async def test_other_changes_to_the_pick_keep_it_and_show_at_once(
    client: httpx.AsyncClient, owner: User, photo_id: str
) -> None:
    await _pets_with_photo(client, owner, photo_id, 3)
    first = (await _todays_pick(client))["pet"]

    response = await client.patch(
        f"{PETS}/{first['id']}", headers=owner.headers, json={"name": "Renamed"}
    )
    assert response.status_code == 200
    # Deleting another pet leaves the pick alone too.
    others = await client.get(f"/api/v1/accounts/{owner.username}/pets")
    other = next(p for p in others.json()["items"] if p["id"] != first["id"])
    await client.delete(f"{PETS}/{other['id']}", headers=owner.headers)

    now = (await _todays_pick(client))["pet"]
    assert now["id"] == first["id"]
    assert now["name"] == "Renamed"


async def test_a_pick_deleted_behind_the_cache_is_replaced(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    stars = await _pets_with_photo(client, owner, photo_id, 2)
    first = (await _todays_pick(client))["pet"]["id"]

    # As when an account deletion cascades to its pets: the cached pick
    # survives, but the pet does not.
    async with services.db.write_session() as session:
        await session.execute(delete(Pet).where(Pet.id == first))
    await services.cache.invalidate(service.pet_key(first))

    assert (await _todays_pick(client))["pet"]["id"] == next(
        s for s in stars if s != first
    )


async def test_the_pick_is_uniform_among_pets_with_a_photo(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    stars = await _pets_with_photo(client, owner, photo_id, 4)
    await a_pet(client, owner, name="NoPhoto")
    days, start = 400, date(2040, 1, 1)

    picks = Counter(
        [
            await service.do_pick_pet_of_the_day(services, start + timedelta(days=i))
            for i in range(days)
        ]
    )

    assert set(picks) <= set(stars)
    expected = days / len(stars)
    chi_square = sum((picks[s] - expected) ** 2 / expected for s in stars)
    # Three degrees of freedom: a fair pick exceeds 45 with probability about
    # 1e-9, while one that skips a pet or favours one by half scores 100+.
    assert chi_square < 45, picks
    # Each day keeps its pick.
    for i in range(0, days, 50):
        day = start + timedelta(days=i)
        again = await service.do_pick_pet_of_the_day(services, day)
        assert again == await service.do_pick_pet_of_the_day(services, day)


async def test_concurrent_first_requests_pick_once(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    await _pets_with_photo(client, owner, photo_id, 10)
    day = date(2041, 3, 1)

    picks = await asyncio.gather(
        *(service.do_pick_pet_of_the_day(services, day) for _ in range(10))
    )

    assert len(set(picks)) == 1
    async with services.db.read_session() as session:
        rows = await session.scalar(
            select(func.count()).select_from(PetOfTheDay).where(PetOfTheDay.day == day)
        )
    assert rows == 1


async def test_a_racing_pick_yields_to_the_first(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    # SQLite serializes writers, so the insert conflict that PostgreSQL can
    # meet is reproduced here by calling the claim twice.
    first, second = await _pets_with_photo(client, owner, photo_id, 2)
    day = date(2042, 7, 7)

    async with services.db.write_session() as session:
        assert await service._claim_day(session, day, first) == first
    async with services.db.write_session() as session:
        assert await service._claim_day(session, day, second) == first


async def test_no_pick_when_no_pet_has_a_photo(
    client: httpx.AsyncClient, services: Services, owner: User
) -> None:
    await a_pet(client, owner)

    assert await service.do_pick_pet_of_the_day(services, date(2043, 1, 1)) is None


async def test_a_stored_pick_that_lost_its_photo_is_replaced(
    client: httpx.AsyncClient, services: Services, owner: User, photo_id: str
) -> None:
    # Removing a photo drops only today's pick; another day's pick of that
    # pet is found stale, and replaced, when that day is asked for.
    first, second = await _pets_with_photo(client, owner, photo_id, 2)
    day = date(2044, 2, 29)
    async with services.db.write_session() as session:
        await service._claim_day(session, day, first)

    response = await client.patch(
        f"{PETS}/{first}", headers=owner.headers, json={"photo_media_id": None}
    )
    assert response.status_code == 200

    assert await service.do_pick_pet_of_the_day(services, day) == second
    async with services.db.read_session() as session:
        stored = list(
            await session.scalars(
                select(PetOfTheDay.pet_id).where(PetOfTheDay.day == day)
            )
        )
    assert stored == [second]
