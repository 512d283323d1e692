"""Builders and checks shared by the pets tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from petpal.media.models import PROCESSING, Media
from petpal.platform.db import utcnow
from petpal.platform.ids import new_id
from petpal.platform.services import Services
from tests.factories import User, a_ready_photo

PETS = "/api/v1/pets"
ADOPTIONS = "/api/v1/adoptions"
OF_THE_DAY = "/api/v1/pets/of-the-day"


async def a_pet(
    client: httpx.AsyncClient, owner: User, **fields: Any
) -> dict[str, Any]:
    """Create a pet of ``owner``; ``fields`` override a plain dog called Rex."""
    body: dict[str, Any] = {"name": "Rex", "species": "dog"}
    body.update(fields)
    response = await client.post(PETS, headers=owner.headers, json=body)
    assert response.status_code == 201, response.text
    pet: dict[str, Any] = response.json()
    return pet


async def a_photo(
    client: httpx.AsyncClient, owner: User, services: Services, photos: Path
) -> str:
    """A ready photo of ``owner``, uploaded and processed."""
    path = photos / "camera-exif" / "orientation_1_landscape.jpg"
    return await a_ready_photo(client, owner, services, path)


async def a_processing_media(services: Services, owner: User) -> str:
    """A media row still waiting for its job, made without racing the relay."""
    media = Media(
        id=new_id(),
        owner_id=owner.id,
        status=PROCESSING,
        source_format="jpeg",
        byte_size=1,
        width=1,
        height=1,
        variants=[],
        created_at=utcnow(),
    )
    async with services.db.write_session() as session:
        session.add(media)
    return media.id


async def walk(
    client: httpx.AsyncClient, url: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every item of a list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    query = dict(params or {})
    while True:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]
