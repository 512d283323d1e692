"""Migration 0004: hashtags and places stored under the old fold of İ."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select, text, update

from petpal.pets.models import Pet
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.social.models import PostTag
from tests.pets.helpers import a_pet
from tests.social.builders import a_member, a_photo, a_post

OLD = "i\u0307"  # what case-folding made of İ, and 0003's code stored


async def test_stored_forms_with_a_dotted_capital_i_are_folded_again(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """What the code before 0004 stored: a tag of its own for #İstanbul (a
    second row where the caption also had #istanbul), a place folded to
    ``i̇zmir``. The migration leaves one row per tag and post, at the first
    of their places, and the place as a search now folds it."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    both = await a_post(client, alice, media_id, "#İstanbul #cats #istanbul")
    alone = await a_post(client, alice, media_id, "#İzmir")
    pet = await a_pet(client, alice, location="İzmir", available_for_adoption=True)
    async with services.db.write_session() as session:
        await session.execute(
            update(PostTag)
            .where(PostTag.post_id == both["id"], PostTag.tag == "istanbul")
            .values(tag=f"{OLD}stanbul")
        )
        session.add(PostTag(tag="istanbul", post_id=both["id"], position=2))
        await session.execute(
            update(PostTag)
            .where(PostTag.post_id == alone["id"])
            .values(tag=f"{OLD}zmir")
        )
        await session.execute(
            update(Pet).where(Pet.id == pet["id"]).values(location_folded=f"{OLD}zmir")
        )
        await session.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    in_redis = bool(services.settings.redis_url)
    if in_redis:
        await services.cache.backend.set("before-0004", b"1", 600)

    await asyncio.to_thread(upgrade, services.settings)

    async with services.db.read_session() as session:
        tags = (
            await session.execute(
                select(PostTag.post_id, PostTag.tag, PostTag.position).order_by(
                    PostTag.post_id, PostTag.position
                )
            )
        ).all()
        folded = await session.scalar(
            select(Pet.location_folded).where(Pet.id == pet["id"])
        )
    assert [tuple(row) for row in tags] == [
        (both["id"], "istanbul", 0),
        (both["id"], "cats", 1),
        (alone["id"], "izmir", 0),
    ]
    assert folded == "izmir"
    if in_redis:
        # The cache held the old forms: the migration's caller cleared it.
        assert await services.cache.backend.get("before-0004") is None
    adoptions = await client.get("/api/v1/adoptions", params={"location": "izmir"})
    assert [p["id"] for p in adoptions.json()["items"]] == [pet["id"]]
