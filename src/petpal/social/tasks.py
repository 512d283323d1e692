"""Social background jobs.

``social.recount`` repairs denormalized counters (a post's likes and
comments, an account's followers, following and posts). Whoever removes
social rows other than through this service, as deleting an account does by
cascade, enqueues it with the ids of the accounts and posts concerned. It
recomputes from the rows, so running it twice does no harm.
"""

from __future__ import annotations

from typing import Any

from petpal.platform.jobs import JobContext, job
from petpal.platform.services import Services
from petpal.social.service import do_recount

RECOUNT_JOB = "social.recount"


@job(RECOUNT_JOB)
async def recount(ctx: JobContext, payload: dict[str, Any]) -> None:
    services: Services = ctx.services
    await do_recount(
        services,
        [str(a) for a in payload.get("account_ids", [])],
        [str(p) for p in payload.get("post_ids", [])],
    )
