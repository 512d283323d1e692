"""The media job: decode, make the variants, and forget the raw upload."""

from __future__ import annotations

from typing import Any

from petpal.media.service import PROCESS_JOB, do_process
from petpal.platform.jobs import JobContext, job


@job(PROCESS_JOB)
async def process_media(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_process(ctx.services, str(payload["media_id"]))
