"""Social background jobs, and what each leaves behind when it dies.

``social.recount`` repairs denormalized counters (a post's likes and
comments, an account's followers, following and posts). Whoever removes
social rows other than through this service, as deleting an account does by
cascade, enqueues it with the ids of the accounts and posts concerned. It
recomputes from the rows, so running it twice does no harm, then drops the
cached counts and the trending ranking derived from what changed.

``social.fanout``, ``social.retract`` and ``social.follow_timeline`` keep
the timelines in line with posts and follows (the home ones, see
:mod:`petpal.social.home`, and the author, public and hashtag ones, see
:mod:`petpal.social.feeds`). Each reads the rows as they are when it runs
and writes only idempotent changes, so a second run does no harm either.

A job that fails every attempt is dead (``petpal jobs dead``), and its
kind's on-dead hook below repairs what it would leave wrong meanwhile, so a
feed or a count is right again without waiting for an operator's replay.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from petpal.platform.jobs import DeadJob, JobContext, enqueue, job, on_dead
from petpal.platform.services import Services
from petpal.social import home
from petpal.social.service import (
    RECOUNT_JOB,
    do_drop_recounted,
    do_recount,
    recount_in,
)

RECOUNTED_JOB = "social.recounted"


@job(RECOUNT_JOB)
async def recount(ctx: JobContext, payload: dict[str, Any]) -> None:
    services: Services = ctx.services
    await do_recount(
        services,
        [str(a) for a in payload.get("account_ids", [])],
        [str(p) for p in payload.get("post_ids", [])],
    )


@on_dead(RECOUNT_JOB)
async def recount_in_verdict(session: AsyncSession, dead: DeadJob) -> None:
    # The counters would stay wrong for good. Its writes are database writes,
    # and the database answers now (the verdict is being recorded in it), so
    # they are made here; dropping what was derived from them waits for a
    # job, since a hook must not touch the cache.
    payload = {
        "account_ids": [str(a) for a in dead.payload.get("account_ids", [])],
        "post_ids": [str(p) for p in dead.payload.get("post_ids", [])],
    }
    await recount_in(session, payload["account_ids"], payload["post_ids"])
    enqueue(session, RECOUNTED_JOB, payload)


# social.recounted needs no on-dead hook: what it drops from the cache and
# the ranking is owed when the store fails (platform/store_calls.py), and is
# dropped by its TTL (views.COUNTS_TTL, the ranking's week) at the latest.
@job(RECOUNTED_JOB)
async def recounted(ctx: JobContext, payload: dict[str, Any]) -> None:
    await do_drop_recounted(
        ctx.services,
        [str(a) for a in payload.get("account_ids", [])],
        [str(p) for p in payload.get("post_ids", [])],
    )


@job(home.FANOUT_JOB)
async def fan_out(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.fan_out(ctx.services, str(payload["post_id"]), str(payload["author_id"]))


@on_dead(home.FANOUT_JOB)
async def forget_fanned_out(session: AsyncSession, dead: DeadJob) -> None:
    # The followers' timelines that exist lack the post, and each read keeps
    # them alive: they are deleted, and rebuilt with it by their next read.
    # So do the public and hashtag timelines, should the request's write
    # have failed too.
    payload = {
        "account_ids": [],
        "followers_of": str(dead.payload["author_id"]),
        "post_id": str(dead.payload["post_id"]),
    }
    enqueue(session, home.FORGET_JOB, payload)


# social.retract needs no on-dead hook: a page never shows a deleted post
# (its counts are gone from the database and the cache) and removes it from
# the timelines it was read from, so the leftover ids only wait for a read.
@job(home.RETRACT_JOB)
async def retract(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.retract(
        ctx.services,
        str(payload["post_id"]),
        str(payload["author_id"]),
        # Jobs queued before the hashtag timelines carry none: their pages
        # drop the deleted post when they meet it.
        [str(t) for t in payload.get("tags", [])],
    )


@job(home.FOLLOW_JOB)
async def follow_timeline(ctx: JobContext, payload: dict[str, Any]) -> None:
    await home.follow_changed(
        ctx.services, str(payload["follower_id"]), str(payload["followee_id"])
    )


@on_dead(home.FOLLOW_JOB)
async def forget_follower_timeline(session: AsyncSession, dead: DeadJob) -> None:
    # The follower's timeline may lack the followee's posts (a follow) or
    # still hold them (an unfollow): it is deleted, and rebuilt by its next
    # read from the follows as they are, as after every unfollow.
    payload = {"account_ids": [str(dead.payload["follower_id"])], "followers_of": None}
    enqueue(session, home.FORGET_JOB, payload)


# social.forget_timelines needs no on-dead hook: a deletion the timeline
# store failed is owed by the process that tried (platform/store_calls.py)
# and made once the store answers. What else kills it (the database away for
# every attempt, that process dying) leaves it in the dead list, where a
# replay of it, or of the job it repairs, does the work.
@job(home.FORGET_JOB)
async def forget_timelines(ctx: JobContext, payload: dict[str, Any]) -> None:
    followers_of = payload.get("followers_of")
    post_id = payload.get("post_id")
    await home.forget_timelines(
        ctx.services,
        [str(a) for a in payload.get("account_ids", [])],
        None if followers_of is None else str(followers_of),
        None if post_id is None else str(post_id),
        [str(t) for t in payload.get("tags", [])],
    )
