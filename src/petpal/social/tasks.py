"""Social background jobs.

``social.recount`` repairs denormalized counters (a post's likes and
comments, an account's followers, following and posts). Whoever removes
social rows other than through this service, as deleting an account does by
cascade, enqueues it with the ids of the accounts and posts concerned. It
recomputes from the rows, so running it twice does no harm.

``social.fanout``, ``social.retract`` and ``social.follow_timeline`` keep
the home timelines in line with posts and follows (see
:mod:`petpal.social.home`). Each reads the rows as they are when it runs
and writes only idempotent changes, so a second run does no harm either.
"""

from __future__ import annotations

from typing import Any

from petpal.platform.jobs import JobContext, job
from petpal.platform.services import Services
from petpal.social import home
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


@job(home.FANOUT_JOB)
async def fan_out(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.fan_out(ctx.services, str(payload["post_id"]), str(payload["author_id"]))


@job(home.RETRACT_JOB)
async def retract(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.retract(ctx.services, str(payload["post_id"]), str(payload["author_id"]))


@job(home.FOLLOW_JOB)
async def follow_timeline(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.follow_changed(
        ctx.services, str(payload["follower_id"]), str(payload["followee_id"])
    )
