"""Home feeds: fanned out on write into capped timelines, big accounts merged at read.

How any feed's page is read from timelines, with the database behind them,
is told in :mod:`petpal.social.feeds`, which also keeps the timelines that
everyone reads alike (an author's posts, the public feed, each hashtag).
This module keeps the home timelines, one per reader, and writes every
timeline a post goes into.

Writing. A new post's id goes into its author's own timelines, the public
one and its hashtags' in the request (an author sees what they just
posted), and a ``social.fanout`` job, committed with the post, writes it
there again and into the timelines of the author's followers: those whose
timelines exist. A timeline exists while its owner reads the feed and
expires ``timeline_ttl_seconds`` after the last read, so "has a timeline"
is what "active" means here: it is exactly the set of feeds that are warm,
it costs one O(1) look-up per follower inside the fan-out script, and
nobody pays for writes to feeds nobody reads.

The job reads the followers ``FANOUT_CHUNK`` at a time, in the order of
their follows, and reads the next chunk while it writes this one, so the
database and the timelines' store work side by side. After each write it
reads the chunk's follows again (see ``_deliver``) and deletes the
timelines of whoever unfollowed meanwhile.

Authors with more than ``fanout_max_followers`` followers are not fanned
out. Their followers' timelines carry a link to the author's own timeline of
recent posts (``author:{id}``), which each page merges in at read time. The
link is set when a follower's timeline is built and when they follow; when
an author crosses the threshold, one last fan-out writes the link itself,
and a mark remembers that it was done.

Deleting. A page never shows a deleted post (see ``feeds``). A
``social.retract`` job, which carries the post's hashtags read before the
deletion, then takes the id out of the timelines, and a page that still
meets it takes it out of the timelines it read. A fan-out that is still
writing when the post is deleted sees it after its next write, takes the
id out of what that write touched, and stops: the retract job may have
run before that write.

Following. A follow adds the followee's recent posts (or the link) to the
follower's timeline; an unfollow takes them out again (``unfollowed``), or
deletes the timeline if a build is in progress, which voids the build. Both
happen in the request; a ``social.follow_timeline`` job committed with the
change is their backstop (``jobs.BACKSTOP_DELAY``): recorded done by the
request once it did the work, made due at once if the timeline store
failed, and run after its delay if the process died in between. It brings
the timeline in line with whatever the follow is by then (after an
unfollow, by deleting it), so no timeline stays wrong for long.

Reading. A warm page is one script call for the timeline's ids and links,
one more for the linked authors' timelines if there are any, then two
round trips for the counts, the viewer's likes and the post views: no SQL.
A missing timeline is rebuilt from the database, and a page the timelines
cannot serve (past the cap, over the rebuild's budget, the store away)
comes from the database, by the query that rebuilds it (``feeds``).

Dying. A job that fails every attempt must not leave a timeline wrong for
as long as its owner keeps reading it (each read extends its life). A dead
fan-out or follow change queues ``social.forget_timelines``, which deletes
the timelines it may have missed (a fan-out's: the author's, the public
one, the post's hashtags' and the followers'), to be rebuilt by their next
read. A dead retract needs nothing: pages already leave deleted posts out
and remove them from the timelines they read.

Cursors are the last id of a page, and ids are ULIDs: "below the last id"
returns each post once, whatever is posted or deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy import Select, String, bindparam, literal, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.platform.cache import CacheBackendError
from petpal.platform.jobs import BackstopCheck, settle_backstop
from petpal.platform.services import Services
from petpal.platform.timelines import TimelineContent, TimelineSlice
from petpal.platform.wire import WirePage
from petpal.social.feeds import (
    author_key,
    build_slice,
    load_author,
    public_keys,
    recent_posts,
    shared_keys,
    tag_key,
    timeline_page,
)
from petpal.social.models import AccountStats, Follow, Post, PostTag
from petpal.social.views import read_counted

FANOUT_JOB = "social.fanout"
RETRACT_JOB = "social.retract"
FOLLOW_JOB = "social.follow_timeline"
FORGET_JOB = "social.forget_timelines"
# Followers read per query by a fan-out (and the like jobs); the next chunk
# is read while the timelines of this one are written. ``Timelines.add``
# splits a chunk into batches of 500 timelines (Redis), ``ADDS_IN_FLIGHT``
# of them at a time, and the store idles between chunks, so a chunk holds
# twice what can be in flight: with 1,000 only two batches were, and one
# post's fan-out kept Redis 70% busy, at 89,000 to 97,000 inserts a second;
# 4,000 gave 102,000 to 120,000 (benchmarks/fanout_writes.py, same machine,
# back to back).
FANOUT_CHUNK = 4000
FOLLOWERS_TASK = "petpal-fanout-followers"  # the task that reads a chunk

FANOUT_WRITES = Counter(
    "petpal_fanout_timeline_writes_total",
    "Timelines a post id (or a link) was written into by fan-out",
)


def home_key(account_id: str) -> str:
    return f"home:{account_id}"


def _announced_key(author_id: str) -> str:
    return f"announced:{author_id}"


# --- reading --------------------------------------------------------------------


async def home_page(
    services: Services, account_id: str, cursor: str | None, limit: int
) -> WirePage:
    """Posts of the accounts ``account_id`` follows, and its own, newest first."""
    return await timeline_page(
        services,
        "home",
        f"home:{account_id}",
        cursor,
        limit,
        account_id,
        functools.partial(_read_timelines, services, account_id),
        functools.partial(_home_query, services, account_id),
    )


async def _read_timelines(
    services: Services, account_id: str, before: str | None, count: int
) -> tuple[list[TimelineSlice], list[str]] | None:
    timelines = services.timelines
    key = home_key(account_id)
    (home,) = await timelines.read([key], before, count)
    if home is None:
        load = functools.partial(_load_home, services, account_id)
        home = await build_slice(services, key, load, before, count)
        if home is None:
            return None
    if not home.links:
        return [home], [key]
    linked = [author_key(author) for author in home.links]
    found = await timelines.read(linked, before, count)
    # Built together: a page waits for one budget, however many are missing.
    built = await asyncio.gather(
        *(
            build_slice(
                services,
                name,
                functools.partial(load_author, services, author),
                before,
                count,
            )
            for name, author, got in zip(linked, home.links, found, strict=True)
            if got is None
        )
    )
    rebuilt = iter(built)
    slices = [home]
    for got in found:
        got = got if got is not None else next(rebuilt)
        if got is None:
            return None  # over budget: this page comes from the database
        slices.append(got)
    return slices, [key, *linked]


def _home_query(
    services: Services, account_id: str, before: str | None, count: int
) -> Select[str, int, int]:
    """The newest ``count`` posts below ``before`` of the account and whom it follows.

    One index range per author (``ix_posts_author_id_id``), whatever the size
    of the posts table. On PostgreSQL a LATERAL join reads at most ``count``
    rows per author; SQLite's planner does the same for ``IN``.
    """
    authors = union_all(
        select(Follow.followee_id.label("author_id")).where(
            Follow.follower_id == account_id
        ),
        select(literal(account_id, String).label("author_id")),
    )
    if services.db.is_sqlite:
        query = select(Post.id, Post.like_count, Post.comment_count).where(
            Post.author_id.in_(authors)
        )
        if before is not None:
            query = query.where(Post.id < before)
        return query.order_by(Post.id.desc()).limit(count)
    each = authors.subquery("authors")
    recent = select(Post.id, Post.like_count, Post.comment_count).where(
        Post.author_id == each.c.author_id
    )
    if before is not None:
        recent = recent.where(Post.id < before)
    newest = recent.order_by(Post.id.desc()).limit(count).lateral("newest")
    return (
        select(newest.c.id, newest.c.like_count, newest.c.comment_count)
        .select_from(each)
        .join(newest, true())
        .order_by(newest.c.id.desc())
        .limit(count)
    )


async def _load_home(services: Services, account_id: str) -> TimelineContent:
    cap = services.timelines.cap
    async with services.db.read_session() as session:
        rows = await read_counted(session, _home_query(services, account_id, None, cap))
        big = await session.scalars(
            select(Follow.followee_id)
            .join(AccountStats, AccountStats.account_id == Follow.followee_id)
            .where(
                Follow.follower_id == account_id,
                AccountStats.follower_count > services.settings.fanout_max_followers,
            )
        )
        links = list(big.all())
    return TimelineContent([row.id for row in rows], len(rows) < cap, links)


# --- writing --------------------------------------------------------------------


def _own_keys(author_id: str, tags: Sequence[str]) -> list[str]:
    """Every timeline a post is in but its followers' home timelines."""
    return [home_key(author_id), *shared_keys(author_id, tags)]


async def deliver_in_request(
    services: Services, author_id: str, post_id: str, tags: Sequence[str]
) -> None:
    """Put a new post into its author's own timelines, the public one and
    its hashtags', in the request.

    Best effort: the fan-out job does it again, and a failure here only
    delays the post in those pages until it runs.
    """
    with contextlib.suppress(CacheBackendError):
        await services.timelines.add(_own_keys(author_id, tags), ids=[post_id])


async def fan_out(services: Services, post_id: str, author_id: str) -> None:
    """Deliver a new post to its followers' timelines (the ``social.fanout`` job)."""
    async with services.db.read_session() as session:
        exists = await _exists(session, post_id)
        tags = await _tags_of(session, post_id)
        followers = await _follower_count(session, author_id)
    if not exists:
        return  # deleted before delivery; a page never shows it anyway
    own = _own_keys(author_id, tags)
    delivery = _fan_out(services, post_id, author_id, own, followers)
    await _or_owe(services, author_id, own, delivery)


async def _tags_of(session: AsyncSession, post_id: str) -> list[str]:
    return list(
        (
            await session.scalars(select(PostTag.tag).where(PostTag.post_id == post_id))
        ).all()
    )


async def _fan_out(
    services: Services,
    post_id: str,
    author_id: str,
    own: Sequence[str],
    followers: int,
) -> None:
    timelines = services.timelines
    await timelines.add(own, ids=[post_id])
    if followers > services.settings.fanout_max_followers:
        # Merged in at read time; followers' timelines need only the link,
        # which those built before the author crossed the threshold lack.
        if not await timelines.has_mark(_announced_key(author_id)):
            await _each_follower(
                services,
                author_id,
                functools.partial(_deliver, services, author_id, (), (author_id,)),
            )
            await timelines.set_mark(_announced_key(author_id))
    else:
        # Under the threshold (again): should it cross it later, announce anew.
        await timelines.forget(_announced_key(author_id))
        # Deleted meanwhile: the chunk that found it so took the id out
        # again; the author's own timelines are seen to below.
        with contextlib.suppress(_PostDeletedError):
            await _each_follower(
                services,
                author_id,
                functools.partial(_deliver, services, author_id, (post_id,), ()),
            )
    # Deleted while this job wrote: the retract job may have run between two
    # writes (found by a trial: a post deleted at once stayed in thousands of
    # timelines). Whatever a write put back after it is taken out here; a
    # write before it, the retract took out.
    async with services.db.read_session() as session:
        if not await _exists(session, post_id):
            await timelines.remove(own, [post_id])


class _PostDeletedError(Exception):
    """The post being fanned out was deleted: the fan-out stops."""


async def _exists(session: AsyncSession, post_id: str) -> bool:
    return await session.scalar(select(Post.id).where(Post.id == post_id)) is not None


async def _deliver(
    services: Services,
    author_id: str,
    ids: Sequence[str],
    links: Sequence[str],
    followers: _Followers,
) -> None:
    keys = {home_key(f): f for f in followers.ids}
    written = await services.timelines.add(list(keys), ids=ids, links=links)
    FANOUT_WRITES.inc(len(written))
    if not written:
        return
    # A follower who unfollowed after the query that found them may have had
    # their timeline deleted before this write: the write would then outlive
    # the unfollow. Whoever no longer follows loses the timeline again. The
    # follows are read again by the chunk's range of follow ids, one index
    # range like the read that found them (a list of a thousand ids would
    # be a statement of its own for every chunk size); one who unfollowed
    # and followed again has a new follow id, out of the range, and is
    # merely rebuilt.
    async with services.db.read_session() as session:
        still = set(
            (
                await session.scalars(
                    select(Follow.follower_id).where(
                        Follow.followee_id == author_id,
                        Follow.id >= followers.first,
                        Follow.id <= followers.last,
                    )
                )
            ).all()
        )
        # A fan-out delivers one post (``ids``; a link announcement none).
        # Its deletion, committed before this read, is seen by it; a
        # retract job that ran before this chunk's write could not take the
        # id out of it (see ``_fan_out``).
        deleted = bool(ids) and not await _exists(session, ids[0])
    left = [key for key in written if keys[key] not in still]
    if left:
        await services.timelines.forget(*left)
    if deleted:
        await services.timelines.remove(written, ids)
        raise _PostDeletedError


async def retract(
    services: Services, post_id: str, author_id: str, tags: Sequence[str]
) -> None:
    """Take a deleted post out of every timeline (the ``social.retract`` job).

    ``tags`` are the post's hashtags, read before it was deleted with them.
    """
    timelines = services.timelines
    own = _own_keys(author_id, tags)

    async def remove(followers: _Followers) -> None:
        await timelines.remove([home_key(f) for f in followers.ids], [post_id])

    async def everywhere() -> None:
        await timelines.remove(own, [post_id])
        await _each_follower(services, author_id, remove)

    await _or_owe(services, author_id, own, everywhere())


def forget_tags_payload(tags: Sequence[str]) -> dict[str, object]:
    """The ``social.forget_timelines`` job that forgets hashtags' timelines."""
    return {"account_ids": [], "followers_of": None, "tags": list(tags)}


async def forget_timelines(
    services: Services,
    account_ids: Sequence[str],
    followers_of: str | None,
    post_id: str | None = None,
    tags: Sequence[str] = (),
) -> None:
    """Delete timelines that may have missed a change, so their next read
    rebuilds them from the database (the ``social.forget_timelines`` job).

    The repair queued when a fan-out or a follow change dies: the home
    timelines of ``account_ids`` and, with ``followers_of``, that author's own
    and every follower's; with ``post_id`` (a fan-out's post), the public
    timeline and those of the post's hashtags. Deleting is the one write
    that needs no knowledge of what was missed, and costs each warm reader
    one rebuild. An edited caption queues it with the ``tags`` whose pages
    the post left or joined.
    """
    keys = [home_key(a) for a in account_ids] + [tag_key(t) for t in tags]
    if followers_of is not None:
        author = followers_of
        # The mark goes too: a big author's next post announces the link anew.
        keys += [home_key(author), author_key(author), _announced_key(author)]
    if post_id is not None:
        async with services.db.read_session() as session:
            tags = await _tags_of(session, post_id)
        keys += public_keys(tags)
    await services.timelines.forget(*keys)
    if followers_of is not None:

        async def forget(followers: _Followers) -> None:
            await services.timelines.forget(*(home_key(f) for f in followers.ids))

        await _each_follower(services, followers_of, forget)


async def _or_owe(
    services: Services, author_id: str, own: Sequence[str], work: Awaitable[None]
) -> None:
    """Run a job's timeline writes; if the store fails, owe what they touch.

    The job is retried, but until then the timelines it missed would be
    served without its change once the store answers again. So all of them
    (``own``, the post's timelines but the followers', and every follower's)
    are owed a deletion and rebuilt.
    """
    try:
        await work
    except CacheBackendError:
        timelines = services.timelines
        timelines.owe_deletion(own)

        async def owe(followers: _Followers) -> None:
            timelines.owe_deletion(home_key(f) for f in followers.ids)

        await _each_follower(services, author_id, owe)
        raise


@dataclass(frozen=True)
class _Followers:
    """A chunk of an author's followers, in the order of their follows' ids."""

    ids: list[str]  # the followers' account ids
    first: str  # the follow ids the chunk spans, both included
    last: str


async def _each_follower(
    services: Services,
    author_id: str,
    action: Callable[[_Followers], Awaitable[None]],
) -> None:
    """Call ``action`` with the author's followers, ``FANOUT_CHUNK`` at a time.

    The next chunk is read while ``action`` works on this one, so the
    database and the timelines' store work at the same time; ``action``
    still sees one chunk at a time, in order.
    """

    async def read(after: str) -> _Followers | None:
        async with services.db.read_session() as session:
            rows = (
                await session.execute(
                    select(Follow.id, Follow.follower_id)
                    .where(Follow.followee_id == author_id, Follow.id > after)
                    .order_by(Follow.id)
                    .limit(FANOUT_CHUNK)
                )
            ).all()
        if not rows:
            return None
        return _Followers([row.follower_id for row in rows], rows[0].id, rows[-1].id)

    def start(after: str) -> asyncio.Task[_Followers | None]:
        return asyncio.create_task(read(after), name=FOLLOWERS_TASK)

    reading: asyncio.Task[_Followers | None] | None = start("")
    try:
        while reading is not None:
            chunk = await reading
            reading = None
            if chunk is None:
                return
            if len(chunk.ids) == FANOUT_CHUNK:
                reading = start(chunk.last)
            await action(chunk)
    finally:
        if reading is not None:
            # Waited for, not cancelled: a task cancelled inside a database
            # call may hang. Its error, if any, is not this one's news.
            await asyncio.wait({reading})
            if not reading.cancelled():
                reading.exception()


async def follow_changed(
    services: Services, follower_id: str, followee_id: str
) -> None:
    """Bring the follower's timeline in line with the follow as it is now.

    The ``social.follow_timeline`` job: the backstop of what a follow or an
    unfollow does in its request (``followed``, ``unfollowed``), which knew
    the facts read here. Either order gives the same result.
    """
    async with services.db.read_session() as session:
        following = await _follows(session, follower_id, followee_id)
        followers = await _follower_count(session, followee_id) if following else 0
    if following:
        await followed(services, follower_id, followee_id, followers=followers)
    else:
        # Forgotten whole: the followee's ids would be one more read, and a
        # job runs rarely (the request's own change failed or never ran).
        await services.timelines.forget(home_key(follower_id))


async def followed(
    services: Services,
    follower_id: str,
    followee_id: str,
    *,
    followers: int,
    backstop: str | None = None,
) -> None:
    """Add the followee's posts to the follower's timeline, after a follow
    committed; ``followers`` is the followee's follower count with it, and
    ``backstop`` the request's job that would otherwise do this, recorded
    done here.

    Should an unfollow commit meanwhile, its ``unfollowed`` may run before
    these posts are written: the follow is read again after writing them,
    and the timeline forgotten if it is gone (the backstop recorded done in
    the same statement as that read when it is there, after the timeline
    is forgotten when it is not).
    """
    timelines = services.timelines
    key = home_key(follower_id)
    big = followers > services.settings.fanout_max_followers
    ids: list[str] = []
    if not big:  # a big account's posts come through the link
        async with services.db.read_session() as session:
            recent = recent_posts(followee_id).limit(timelines.cap + 1)
            ids = list((await session.scalars(recent)).all())
    written: list[str] = []
    if len(ids) > timelines.cap:
        # More posts than a timeline holds: its newest, added, would stand
        # above a gap in a timeline that vouches for all it holds below
        # them (found by a trial: following an account of 1,000 posts hid
        # its 200 oldest from every page). Forgotten, the timeline is
        # rebuilt whole at the next read, which knows where it stops.
        await timelines.forget(key)
    else:
        written = await timelines.add(
            [key], ids=ids, links=[followee_id] if big else []
        )
    pair = {"follower": follower_id, "followee": followee_id}
    if (written or backstop is not None) and not await _STILL_FOLLOWING.settle_if(
        services.db, backstop, pair
    ):
        if written:
            await timelines.forget(key)  # unfollowed meanwhile
        if backstop is not None:
            await settle_backstop(services.db, backstop)


async def unfollowed(
    services: Services, follower_id: str, followee_id: str, *, backstop: str
) -> None:
    """Take the followee's posts and link out of the follower's timeline,
    after an unfollow committed; ``backstop`` as for ``followed``.

    The timeline stays, so the follower's next page needs no rebuild. A
    fan-out of the followee that read the follow before it went deletes the
    timeline itself once it sees that (``_deliver``); a build in progress,
    which may have read the follow, is voided (``Timelines.unlink``); and
    should the follower follow again before this runs, the follow is read
    again afterwards and the timeline forgotten.
    """
    timelines = services.timelines
    key = home_key(follower_id)
    async with services.db.read_session() as session:
        # Every post of the followee a timeline can hold: it keeps the
        # newest cap (plus slack) of all, so none older than these.
        recent = recent_posts(followee_id).limit(timelines.cap + timelines.slack)
        ids = list((await session.scalars(recent)).all())
    kept = await timelines.unlink(key, ids, followee_id)
    pair = {"follower": follower_id, "followee": followee_id}
    if not await _STILL_NOT_FOLLOWING.settle_if(services.db, backstop, pair):
        if kept:
            await timelines.forget(key)  # followed again meanwhile
        await settle_backstop(services.db, backstop)


# The follow of ``follower`` to ``followee``, read after a request changed
# the follower's timeline for it, with the request's backstop settled in the
# same statement when the timeline stands as written.
_FOLLOWING = (
    select(Follow.id)
    .where(
        Follow.follower_id == bindparam("follower"),
        Follow.followee_id == bindparam("followee"),
    )
    .exists()
)
_STILL_FOLLOWING = BackstopCheck(_FOLLOWING)
_STILL_NOT_FOLLOWING = BackstopCheck(~_FOLLOWING)


async def _follows(session: AsyncSession, follower_id: str, followee_id: str) -> bool:
    pair = {"follower": follower_id, "followee": followee_id}
    return bool(await session.scalar(select(_FOLLOWING), pair))


async def _follower_count(session: AsyncSession, account_id: str) -> int:
    count = await session.scalar(
        select(AccountStats.follower_count).where(AccountStats.account_id == account_id)
    )
    return int(count or 0)
