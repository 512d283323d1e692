"""Uploads and their processing state.

The upload request only streams bytes to storage, checks the header, records
the media as ``processing`` and queues the job; decoding happens in
``do_process``, which the ``media.process`` job (:mod:`petpal.media.tasks`)
runs. Public functions for other services: ``require_ready_media``,
``display_urls``, ``media_views`` and ``media_json``.

``settings.media_process_inline`` is a benchmark baseline only: the upload
request then runs ``do_process`` itself before answering.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from petpal.media.imaging import (
    ImageFailed,
    ImageLimits,
    ImageRejected,
    inspect_header,
    process_image,
)
from petpal.media.models import FAILED, PROCESSING, READY, Media
from petpal.media.schemas import MediaView, VariantView
from petpal.media.upload import receive_file
from petpal.platform.db import utcnow
from petpal.platform.errors import InvalidInputError, NotFoundError, ProblemError
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.jobs import enqueue
from petpal.platform.services import Services

log = structlog.get_logger(__name__)

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
    inline = services.settings.media_process_inline
    async with services.db.write_session() as session:
        session.add(media)
        if not inline:
            enqueue(session, PROCESS_JOB, {"media_id": media_id})
    if not inline:
        return media
    await do_process(services, media_id)
    async with services.db.read_session() as session:
        processed = await session.get(Media, media_id)
    # Deleted meanwhile only if its owner was: nothing newer to show then.
    return processed or media


async def do_process(services: Services, media_id: str) -> None:
    """Decode an upload, store its variants and record it ``ready`` (or
    ``failed``, with a reason); the raw upload is deleted either way.

    Idempotent: media no longer ``processing`` is left as it is, and the
    variants' keys depend only on the media id and the variant, so a second
    run overwrites instead of adding a second set. The one exception is media
    failed by :func:`do_fail_processing` (its job died; the upload is kept):
    a replayed job takes it back to ``processing`` and tries again.
    """
    async with services.db.read_session() as session:
        media = await session.get(Media, media_id)
    if media is None or media.incoming_key is None:
        return  # already done by an earlier delivery, or deleted
    if media.status == FAILED:
        if not await _resume_processing(services, media_id):
            return  # resumed by another delivery meanwhile
    elif media.status != PROCESSING:
        return
    incoming_key = media.incoming_key

    with tempfile.TemporaryDirectory(dir=_tmp_dir(services)) as workdir:
        source = Path(workdir) / "source"
        await services.storage.download_to(incoming_key, source)
        try:
            result = await asyncio.to_thread(
                process_image, source, image_limits(services)
            )
        except ImageFailed as exc:
            await _finish(services, media_id, status=FAILED, failure_reason=exc.reason)
            await services.storage.delete(incoming_key)
            log.info("media.failed", media_id=media_id, reason=exc.reason)
            return

    variants = []
    for variant in result.variants:
        key = f"media/{media_id}/{variant.name}.{variant.extension}"
        await services.storage.put(key, variant.data, variant.content_type)
        variants.append(
            {
                "name": variant.name,
                "key": key,
                "width": variant.width,
                "height": variant.height,
                "content_type": variant.content_type,
            }
        )
    await _finish(
        services,
        media_id,
        status=READY,
        width=result.width,
        height=result.height,
        animated=result.animated,
        blurhash=result.blurhash,
        variants=variants,
    )
    await services.storage.delete(incoming_key)


async def do_fail_processing(session: AsyncSession, media_id: str, reason: str) -> None:
    """Record media ``failed`` because its job gave up, in ``session``.

    The raw upload is kept, so that ``petpal jobs replay`` can process it
    once the cause (a storage outage, say) is gone. No cache entry needs
    dropping: only ready media is cached.
    """
    await session.execute(
        update(Media)
        .where(Media.id == media_id, Media.status == PROCESSING)
        .values(status=FAILED, failure_reason=reason, processed_at=utcnow())
    )


async def _resume_processing(services: Services, media_id: str) -> bool:
    """Take media failed by its job's death back to ``processing``."""
    async with services.db.write_session() as session:
        result = await session.execute(
            update(Media)
            .where(
                Media.id == media_id,
                Media.status == FAILED,
                Media.incoming_key.is_not(None),
            )
            .values(status=PROCESSING, failure_reason=None, processed_at=None)
        )
    return bool(getattr(result, "rowcount", 0))


def _tmp_dir(services: Services) -> Path:
    path = services.settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _finish(services: Services, media_id: str, **values: Any) -> None:
    async with services.db.write_session() as session:
        await session.execute(
            update(Media)
            .where(Media.id == media_id, Media.status == PROCESSING)
            .values(incoming_key=None, processed_at=utcnow(), **values)
        )
    await services.cache.invalidate(media_key(media_id))


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


async def media_json(services: Services, media_ids: Iterable[str]) -> dict[str, bytes]:
    """The *ready* media among ``media_ids``, each as its view's JSON.

    Cached as that JSON, which never changes once ready: a page embeds it as
    it is, without building a model of it.
    """
    keys = {media_key(media_id): media_id for media_id in media_ids}
    if not keys:
        return {}

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
    return {keys[key]: blob for key, blob in found.items() if blob is not None}


async def media_views(
    services: Services, media_ids: Iterable[str]
) -> dict[str, MediaView]:
    """Views of the *ready* media among ``media_ids``, cached (they never change)."""
    return {
        media_id: MediaView.model_validate_json(blob)
        for media_id, blob in (await media_json(services, media_ids)).items()
    }


async def display_urls(services: Services, media_ids: Iterable[str]) -> dict[str, str]:
    """The display-size URL of each ready media item among ``media_ids``."""
    urls = {}
    for media_id, blob in (await media_json(services, media_ids)).items():
        # Read from the cached JSON directly: only one field is needed.
        by_name = {v["name"]: v["url"] for v in orjson.loads(blob)["variants"]}
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
