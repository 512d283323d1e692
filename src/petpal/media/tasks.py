"""The media jobs: process an upload, forget an upload kept for a replay,
and delete a photo nothing shows any more, then its files.

``media.process`` decodes, makes the variants and deletes the raw upload. If
it dies, its photo is marked failed and its upload kept for
``media_failed_upload_retention_seconds``, after which ``media.discard_upload``
(queued by the death) deletes it: an upload may carry GPS and other metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from petpal.media.service import (
    DELETE_FILES_JOB,
    DISCARD_UPLOAD_JOB,
    PROCESS_JOB,
    RELEASE_JOB,
    do_delete_files,
    do_discard_upload,
    do_fail_processing,
    do_process,
    do_release_media,
)
from petpal.platform.jobs import DeadJob, JobContext, job, on_dead


@job(PROCESS_JOB)
async def process_media(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_process(ctx.services, str(payload["media_id"]))


@on_dead(PROCESS_JOB)
async def fail_media(session: AsyncSession, dead: DeadJob) -> None:
    # Otherwise the photo stays "processing" and the owner's app polls forever.
    tries = "1 attempt" if dead.attempts == 1 else f"{dead.attempts} attempts"
    reason = f"processing failed after {tries}"
    await do_fail_processing(session, str(dead.payload["media_id"]), reason)


@job(DISCARD_UPLOAD_JOB)
async def discard_upload(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_discard_upload(
        ctx.services,
        str(payload["media_id"]),
        datetime.fromisoformat(str(payload["failed_at"])),
    )


# media.discard_upload needs no on-dead hook: a death leaves only the upload
# behind, which `petpal media sweep-uploads` deletes once it has expired.


@job(RELEASE_JOB)
async def release_media(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_release_media(ctx.services, [str(m) for m in payload["media_ids"]])


@job(DELETE_FILES_JOB)
async def delete_files(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_delete_files(ctx.services, [str(k) for k in payload["keys"]])


# Neither has an on-dead hook: a photo a dead release left is still whole,
# and a file a dead deletion left stays served to whoever kept its address
# (no page names it any more) until `petpal jobs replay` runs the job again.
