"""The media job: decode, make the variants, and forget the raw upload."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from petpal.media.service import PROCESS_JOB, do_fail_processing, do_process
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
