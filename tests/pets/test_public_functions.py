"""The functions other services call: require_own_pets and pet_summaries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from petpal.media.service import DISPLAY_VARIANT
from petpal.pets.schemas import PetSummary, Species
from petpal.pets.service import pet_summaries, require_own_pets
from petpal.platform.errors import InvalidInputError
from petpal.platform.ids import new_id
from petpal.platform.services import Services
from tests.factories import a_user
from tests.pets.helpers import PETS, a_pet, a_photo


async def test_require_own_pets_accepts_the_owners_pets(
    client: httpx.AsyncClient, services: Services
) -> None:
    owner = await a_user(client)
    pets = [(await a_pet(client, owner))["id"] for _ in range(3)]

    async with services.db.write_session() as session:
        await require_own_pets(session, pets, owner.id)
        await require_own_pets(session, [], owner.id)


@pytest.mark.parametrize(
    "which",
    ["stranger's", "unknown", "malformed", "duplicate", "deleted", "empty string"],
)
async def test_require_own_pets_refuses(
    client: httpx.AsyncClient, services: Services, which: str
) -> None:
    owner, stranger = await a_user(client), await a_user(client)
    mine = (await a_pet(client, owner))["id"]
    other = {
        "stranger's": (await a_pet(client, stranger))["id"],
        "unknown": new_id(),
        "malformed": "not-an-id",
        "duplicate": mine,
        "deleted": (await a_pet(client, owner))["id"],
        "empty string": "",
    }[which]
    if which == "deleted":
        await client.delete(f"{PETS}/{other}", headers=owner.headers)

    with pytest.raises(InvalidInputError) as raised:
        async with services.db.write_session() as session:
            await require_own_pets(session, [mine, other], owner.id)

    assert raised.value.status == 422
    assert raised.value.code == "invalid_pet"


async def test_pet_summaries_follow_every_change(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    owner = await a_user(client)
    photo_id = await a_photo(client, owner, services, photos)
    with_photo = await a_pet(
        client, owner, name="Mochi", species="cat", photo_media_id=photo_id
    )
    plain = await a_pet(client, owner, name="Rex")
    medium = next(
        v["url"]
        for v in with_photo["photo"]["variants"]
        if v["name"] == DISPLAY_VARIANT
    )

    summaries = await pet_summaries(
        services, [with_photo["id"], plain["id"], new_id(), "junk", plain["id"]]
    )

    assert summaries == {
        with_photo["id"]: PetSummary(
            id=with_photo["id"], name="Mochi", species=Species.CAT, photo_url=medium
        ),
        plain["id"]: PetSummary(id=plain["id"], name="Rex", species=Species.DOG),
    }

    await client.patch(
        f"{PETS}/{plain['id']}",
        headers=owner.headers,
        json={"name": "Rexy", "photo_media_id": photo_id},
    )
    await client.delete(f"{PETS}/{with_photo['id']}", headers=owner.headers)

    after = await pet_summaries(services, [with_photo["id"], plain["id"]])
    assert after == {
        plain["id"]: PetSummary(
            id=plain["id"], name="Rexy", species=Species.DOG, photo_url=medium
        )
    }
