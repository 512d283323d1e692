"""Uploads and their processing state.

The upload request only streams bytes to storage, checks the header, records
the media as ``processing`` and queues the job; decoding happens in
:mod:`petpal.media.tasks`. Public functions for other services:
``require_ready_media``, ``display_urls`` and ``media_views``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from petpal.media.imaging import ImageLimits, ImageRejected, inspect_header
from petpal.media.models import PROCESSING, READY, Media
from petpal.media.schemas import MediaView, VariantView
from petpal.media.upload import receive_file
from petpal.platform.db import utcnow
from petpal.platform.errors import InvalidInputError, NotFoundError, ProblemError
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.jobs import enqueue
from petpal.platform.services import Services

PROCESS_JOB = "media.process"
DISPLAY_VARIANT = "medium"
READY_TTL = 3600.0


def media_key(media_id: str) -> str:
    return f"media:{media_id}"


def image_limits(services: Services) -> ImageLimits:
    return ImageLimits(
        max_bytes=services.settings.max_upload_bytes,
        max_pixels=services.settings.max_upload_pixels,
    )


async def do_upload(services: Services, owner_id: str, request: Request) -> Media:
    limits = image_limits(services)
    received = await receive_file(
        request, services.settings.data_dir / "tmp", limits.max_bytes
    )
    try:
        try:
            header = await asyncio.to_thread(inspect_header, received.path, limits)
        except ImageRejected as exc:
            raise ProblemError(exc.status, exc.code, exc.detail) from exc
        media_id = new_id()
        incoming_key = f"incoming/{media_id}"
        await services.storage.put(incoming_key, received.path, header.content_type)
    finally:
        received.path.unlink(missing_ok=True)
    media = Media(
        id=media_id,
        owner_id=owner_id,
        status=PROCESSING,
        source_format=header.format,
        byte_size=received.size,
        incoming_key=incoming_key,
        width=header.width,
        height=header.height,
        animated=header.frames > 1,
        variants=[],
        created_at=utcnow(),
    )
    async with services.db.write_session() as session:
        session.add(media)
        enqueue(session, PROCESS_JOB, {"media_id": media_id})
    return media


def to_view(services: Services, media: Media) -> MediaView:
    ready = media.status == READY
    return MediaView(
        id=media.id,
        status=media.status,
        failure_reason=media.failure_reason,
        width=media.width if ready else None,
        height=media.height if ready else None,
        animated=media.animated,
        blurhash=media.blurhash,
        variants=[
            VariantView(
                name=v["name"],
                url=services.storage.url_for(v["key"]),
                width=v["width"],
                height=v["height"],
                content_type=v["content_type"],
            )
            for v in (media.variants if ready else [])
        ],
        created_at=media.created_at,
    )


async def get_media(
    services: Services, media_id: str, viewer_id: str | None
) -> MediaView:
    """A media item; others than its owner see it only once it is ready."""
    if is_valid_id(media_id):
        views = await media_views(services, [media_id])
        if media_id in views:
            return views[media_id]
        async with services.db.read_session() as session:
            media = await session.get(Media, media_id)
        if media is not None and media.owner_id == viewer_id:
            return to_view(services, media)
    raise NotFoundError("the media")


async def media_views(
    services: Services, media_ids: Iterable[str]
) -> dict[str, MediaView]:
    """Views of the *ready* media among ``media_ids``, cached (they never change)."""

    keys = {media_key(media_id): media_id for media_id in media_ids}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        async with services.db.read_session() as session:
            ready = await session.scalars(
                select(Media).where(
                    Media.id.in_([keys[k] for k in missing]), Media.status == READY
                )
            )
            return {
                media_key(m.id): to_view(services, m).model_dump_json().encode()
                for m in ready
            }

    # One cache round trip for the whole list, one query for what it misses.
    # A media item still processing is cached as missing only briefly.
    found = await services.cache.get_or_load_many(
        list(keys), load, ttl=READY_TTL, missing_ttl=2.0
    )
    return {
        keys[key]: MediaView.model_validate_json(blob)
        for key, blob in found.items()
        if blob is not None
    }


async def display_urls(services: Services, media_ids: Iterable[str]) -> dict[str, str]:
    """The display-size URL of each ready media item among ``media_ids``."""
    urls = {}
    for media_id, view in (await media_views(services, media_ids)).items():
        by_name = {v.name: v.url for v in view.variants}
        url = by_name.get(DISPLAY_VARIANT) or next(iter(by_name.values()), None)
        if url:
            urls[media_id] = url
    return urls


async def require_ready_media(
    session: AsyncSession, media_ids: list[str], owner_id: str
) -> None:
    """Raise 422 unless every id names a ready media item of ``owner_id``."""
    wanted = set(media_ids)
    if not all(is_valid_id(m) for m in wanted):
        raise InvalidInputError("invalid_media", "a media id is malformed")
    rows = await session.execute(
        select(Media.id, Media.owner_id, Media.status).where(Media.id.in_(wanted))
    )
    found = {row.id: row for row in rows}
    for media_id in media_ids:
        row = found.get(media_id)
        if row is None or row.owner_id != owner_id:
            raise InvalidInputError(
                "invalid_media", f"media {media_id} does not exist or is not yours"
            )
        if row.status != READY:
            raise InvalidInputError(
                "media_not_ready", f"media {media_id} is {row.status}, not ready"
            )
