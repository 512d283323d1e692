"""The media job: decode, make the variants, and forget the raw upload."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import update

from petpal.media.imaging import ImageFailed, process_image
from petpal.media.models import FAILED, PROCESSING, READY, Media
from petpal.media.service import PROCESS_JOB, image_limits, media_key
from petpal.platform.db import utcnow
from petpal.platform.jobs import JobContext, job
from petpal.platform.services import Services

log = structlog.get_logger(__name__)


@job(PROCESS_JOB)
async def process_media(ctx: JobContext, payload: dict[str, Any]) -> None:
    services: Services = ctx.services
    media_id = str(payload["media_id"])
    async with services.db.read_session() as session:
        media = await session.get(Media, media_id)
    if media is None or media.status != PROCESSING or media.incoming_key is None:
        return  # already done by an earlier delivery, or deleted
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
        # Keys depend only on the media id and the variant, so a second
        # delivery of this job overwrites instead of adding a second set.
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
