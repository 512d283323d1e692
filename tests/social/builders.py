"""Builders and checks shared by the social tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from petpal.identity.models import Account
from petpal.media.models import READY, Media
from petpal.platform.app import create_app
from petpal.platform.db import utcnow
from petpal.platform.ids import new_id
from petpal.platform.jobs import EmbeddedRelay
from petpal.platform.security import AccessClaims, issue_access_token
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.factories import User

LANDSCAPE = Path("camera-exif") / "orientation_1_landscape.jpg"
VARIANT_URL = "/media-files/media/{}/medium.jpg"


async def a_photo(
    client: httpx.AsyncClient, user: User, services: Services, photos: Path
) -> str:
    """A ready photo of ``user``, as the media service leaves one.

    Made in the database rather than uploaded: social needs a ready media item
    of the author's, not image processing, which tests/media covers. A real
    upload costs seconds of processing each on a shared machine, and needs the
    job relay these tests run without (see conftest.py); with it back on,
    ``a_ready_photo(client, user, services, photos / LANDSCAPE)`` drops in.
    """
    media_id = new_id()
    async with services.db.write_session() as session:
        session.add(
            Media(
                id=media_id,
                owner_id=user.id,
                status=READY,
                source_format="jpeg",
                byte_size=1234,
                width=640,
                height=480,
                variants=[
                    {
                        "name": "medium",
                        "key": f"media/{media_id}/medium.jpg",
                        "width": 640,
                        "height": 480,
                        "content_type": "image/jpeg",
                    }
                ],
                created_at=utcnow(),
            )
        )
    return media_id


async def a_post(
    client: httpx.AsyncClient, user: User, media_id: str, caption: str = ""
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/posts",
        headers=user.headers,
        json={"caption": caption, "media_ids": [media_id]},
    )
    assert response.status_code == 201, response.text
    post: dict[str, Any] = response.json()
    return post


async def many_users(services: Services, count: int) -> list[User]:
    """Accounts made straight in the database, with access tokens.

    Signing up hashes a password twice per account (sign-up and log-in), which
    is slow and not what these tests are about; tests of a single person's
    flow still use ``a_user``.
    """
    users = []
    async with services.db.write_session() as session:
        for _ in range(count):
            account_id = new_id()
            name = f"bulk_{account_id[-10:].lower()}"
            session.add(
                Account(
                    id=account_id,
                    username=name,
                    username_canonical=name,
                    email=f"{name}@example.org",
                    email_canonical=f"{name}@example.org",
                    password_hash="not-a-hash",
                    display_name=name,
                    bio="",
                    created_at=utcnow(),
                )
            )
            token = issue_access_token(
                services.secret, AccessClaims(account_id, name), 900
            )
            users.append(User(account_id, name, token, ""))
    return users


async def walk(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int = 2,
    between_pages: Any = None,
) -> list[dict[str, Any]]:
    """Every item of a list, following next_cursor; ``between_pages`` is
    awaited after each page, e.g. to add items while the walk goes on."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        if between_pages is not None:
            await between_pages()


async def a_member(services: Services) -> User:
    """One account made straight in the database (see ``many_users``)."""
    (user,) = await many_users(services, 1)
    return user


@asynccontextmanager
async def an_app(
    settings: Settings, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    application = create_app(settings.model_copy(update=overrides))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            yield client, application.state.services


async def run_jobs(services: Services, concurrency: int = 2) -> None:
    """Run every due job, for an app built with run_jobs_in_process=False."""
    relay = EmbeddedRelay(
        services.db,
        services,
        concurrency=concurrency,
        poll_seconds=0.05,
        max_attempts=3,
    )
    relay.start()
    try:
        await relay.drain()
    finally:
        await relay.stop()


async def settle(services: Services) -> None:
    assert services.relay is not None
    await services.relay.drain()
    await services.timelines.wait_idle()


async def stored(services: Services, key: str) -> list[str] | None:
    """The ids a timeline holds (None: it does not exist or is being built)."""
    (found,) = await services.timelines.read([key], None, 10_000)
    return None if found is None else found.ids
