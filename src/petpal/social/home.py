"""Home feeds: fanned out on write into capped timelines, big accounts merged at read.

Writing. A new post's id goes into its author's own timeline in the request
(an author sees what they just posted), and a ``social.fanout`` job,
committed with the post, writes it into the timelines of the author's
followers: those whose timelines exist. A timeline exists while its owner
reads the feed and expires ``timeline_ttl_seconds`` after the last read, so
"has a timeline" is what "active" means here: it is exactly the set of
feeds that are warm, it costs one O(1) look-up per follower inside the
fan-out script, and nobody pays for writes to feeds nobody reads.

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

Deleting. A page never shows a deleted post: its posts' counts come through
the ``post-counts`` cache, which the deletion invalidates and which caches
"not found", and a post without counts is left out. A ``social.retract``
job then takes the id out of the timelines, and a page that still meets it
takes it out of the timelines it read.

Following. A follow adds the followee's recent posts (or the link) to the
follower's timeline; an unfollow deletes the timeline, which also voids a
build in progress, and the next read rebuilds it. Both happen in the
request; a ``social.follow_timeline`` job committed with the change is their
backstop (``jobs.BACKSTOP_DELAY``): recorded done by the request once it did
the work, made due at once if the timeline store failed, and run after its
delay if the process died in between. It brings the timeline in line with
whatever the follow is by then, so no timeline stays wrong for long.

Reading. A warm page is one script call for the timeline's ids and links,
one more for the linked authors' timelines if there are any, then two
round trips for the counts, the viewer's likes and the post views
(``views.post_wires``): no SQL. A missing timeline is rebuilt from the
database at once; if that takes longer than
``timeline_rebuild_budget_seconds`` the page is served straight from the
database and the build is stored when it ends. A page below what the
timelines hold (past the cap) comes from the database, by the same query.

Dying. A job that fails every attempt must not leave a timeline wrong for
as long as its owner keeps reading it (each read extends its life). A dead
fan-out or follow change queues ``social.forget_timelines``, which deletes
the timelines it may have missed, to be rebuilt by their next read. A dead
retract needs nothing: pages already leave deleted posts out and remove them
from the timelines they read.

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
from sqlalchemy import Select, String, literal, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.platform.cache import CacheBackendError
from petpal.platform.services import Services
from petpal.platform.timelines import TimelineContent, TimelineSlice
from petpal.platform.wire import WirePage
from petpal.social.models import AccountStats, Follow, Post
from petpal.social.views import (
    Counted,
    after_id,
    next_cursor,
    post_wires,
    read_counted,
)

FANOUT_JOB = "social.fanout"
RETRACT_JOB = "social.retract"
FOLLOW_JOB = "social.follow_timeline"
FORGET_JOB = "social.forget_timelines"
# Followers read per query by a fan-out (and the like jobs); the next chunk
# is read while the timelines of this one are written (``Timelines.add``
# splits them into batches of its own).
FANOUT_CHUNK = 1000
FOLLOWERS_TASK = "petpal-fanout-followers"  # the task that reads a chunk

HOME_PAGES = Counter(
    "petpal_home_feed_pages_total",
    "Home feed pages by where their ids came from",
    ["source"],
)
FANOUT_WRITES = Counter(
    "petpal_fanout_timeline_writes_total",
    "Timelines a post id (or a link) was written into by fan-out",
)


def home_key(account_id: str) -> str:
    return f"home:{account_id}"


def author_key(account_id: str) -> str:
    return f"author:{account_id}"


def _announced_key(author_id: str) -> str:
    return f"announced:{author_id}"


# --- reading --------------------------------------------------------------------


async def home_page(
    services: Services, account_id: str, cursor: str | None, limit: int
) -> WirePage:
    """Posts of the accounts ``account_id`` follows, and its own, newest first."""
    scope = f"home:{account_id}"
    before = after_id(services, scope, cursor)
    found = await _from_timelines(services, account_id, before, limit + 1)
    if found is None:
        counted = await _from_database(services, account_id, before, limit + 1)
        ids = [c.id for c in counted]
        wires = await post_wires(
            services, ids[:limit], account_id, {c.id: c for c in counted}
        )
    else:
        ids, sources = found
        wires = await post_wires(services, ids[:limit], account_id)
        shown = {wire["id"] for wire in wires}
        gone = [i for i in ids[:limit] if i not in shown]
        if gone:
            # Deleted (or their author is): never shown, and out of the way
            # now. Should the store fail, the retract job removes them too.
            with contextlib.suppress(CacheBackendError):
                await services.timelines.remove(sources, gone)
    return WirePage(wires, next_cursor(services, scope, ids[:limit], len(ids) > limit))


async def _from_timelines(
    services: Services, account_id: str, before: str | None, count: int
) -> tuple[list[str], list[str]] | None:
    """Up to ``count`` ids below ``before`` and the timelines they came from;
    None when the page must come from the database."""
    if not services.cache.enabled:
        HOME_PAGES.labels("cache_off").inc()
        return None
    try:
        found = await _read_timelines(services, account_id, before, count)
    except CacheBackendError:
        HOME_PAGES.labels("backend_error").inc()
        return None
    if found is None:
        return None
    slices, keys = found
    ids = _merge(slices, before, count)
    if ids is None:
        HOME_PAGES.labels("past_timeline").inc()
        return None
    HOME_PAGES.labels("timeline").inc()
    return ids, keys


async def _read_timelines(
    services: Services, account_id: str, before: str | None, count: int
) -> tuple[list[TimelineSlice], list[str]] | None:
    timelines = services.timelines
    key = home_key(account_id)
    (home,) = await timelines.read([key], before, count)
    if home is None:
        home = await _build(services, key, _load_home, account_id, before, count)
        if home is None:
            return None
    if not home.links:
        return [home], [key]
    linked = [author_key(author) for author in home.links]
    found = await timelines.read(linked, before, count)
    # Built together: a page waits for one budget, however many are missing.
    built = await asyncio.gather(
        *(
            _build(services, name, _load_author, author, before, count)
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


async def _build(
    services: Services,
    key: str,
    load: Callable[[Services, str], Awaitable[TimelineContent]],
    account_id: str,
    before: str | None,
    count: int,
) -> TimelineSlice | None:
    content = await services.timelines.build(
        key,
        functools.partial(load, services, account_id),
        services.settings.timeline_rebuild_budget_seconds,
    )
    if content is None:
        HOME_PAGES.labels("rebuild_over_budget").inc()
        return None
    return content.slice(before, count)


def _merge(
    slices: Sequence[TimelineSlice], before: str | None, count: int
) -> list[str] | None:
    """The newest ``count`` ids of all ``slices`` together, if they are known.

    Each slice holds the newest ids of its timeline below ``before``. One
    that returned fewer than asked and is incomplete knows nothing below
    its oldest id: below that, another slice's ids may have neighbours
    nobody holds, so the merged page may only reach down to it. None if
    that leaves the page short.
    """
    merged = sorted({i for s in slices for i in s.ids}, reverse=True)
    floor = None
    for s in slices:
        if len(s.ids) < count and not s.complete:
            # An empty slice knows nothing below ``before`` (or at all).
            own = s.ids[-1] if s.ids else (before or "~")
            floor = own if floor is None else max(floor, own)
    if floor is None:
        return merged[:count]
    known = [i for i in merged if i >= floor]
    return known[:count] if len(known) >= count else None


async def _from_database(
    services: Services, account_id: str, before: str | None, count: int
) -> list[Counted]:
    async with services.db.read_session() as session:
        return await read_counted(
            session, _home_query(services, account_id, before, count)
        )


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


async def _load_author(services: Services, author_id: str) -> TimelineContent:
    cap = services.timelines.cap
    async with services.db.read_session() as session:
        ids = list((await session.scalars(_recent_posts(author_id, cap))).all())
    return TimelineContent(ids, len(ids) < cap)


def _recent_posts(author_id: str, count: int) -> Select[str]:
    return (
        select(Post.id)
        .where(Post.author_id == author_id)
        .order_by(Post.id.desc())
        .limit(count)
    )


# --- writing --------------------------------------------------------------------


async def deliver_to_author(services: Services, author_id: str, post_id: str) -> None:
    """Put a new post into its author's own timelines, in the request.

    Best effort: the fan-out job does it again, and a failure here only
    delays the author's own view of the post until it runs.
    """
    with contextlib.suppress(CacheBackendError):
        await services.timelines.add(
            [home_key(author_id), author_key(author_id)], ids=[post_id]
        )


async def fan_out(services: Services, post_id: str, author_id: str) -> None:
    """Deliver a new post to its followers' timelines (the ``social.fanout`` job)."""
    async with services.db.read_session() as session:
        exists = await session.scalar(select(Post.id).where(Post.id == post_id))
        followers = await _follower_count(session, author_id)
    if exists is None:
        return  # deleted before delivery; a page never shows it anyway
    delivery = _fan_out(services, post_id, author_id, followers)
    await _or_owe(services, author_id, delivery)


async def _fan_out(
    services: Services, post_id: str, author_id: str, followers: int
) -> None:
    timelines = services.timelines
    await timelines.add([home_key(author_id), author_key(author_id)], ids=[post_id])
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
        return
    # Under the threshold (again): should it cross it later, announce anew.
    await timelines.forget(_announced_key(author_id))
    await _each_follower(
        services,
        author_id,
        functools.partial(_deliver, services, author_id, (post_id,), ()),
    )


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
    left = [key for key in written if keys[key] not in still]
    if left:
        await services.timelines.forget(*left)


async def retract(services: Services, post_id: str, author_id: str) -> None:
    """Take a deleted post out of every timeline (the ``social.retract`` job)."""
    timelines = services.timelines

    async def remove(followers: _Followers) -> None:
        await timelines.remove([home_key(f) for f in followers.ids], [post_id])

    async def everywhere() -> None:
        await timelines.remove([home_key(author_id), author_key(author_id)], [post_id])
        await _each_follower(services, author_id, remove)

    await _or_owe(services, author_id, everywhere())


async def forget_timelines(
    services: Services, account_ids: Sequence[str], followers_of: str | None
) -> None:
    """Delete timelines that may have missed a change, so their next read
    rebuilds them from the database (the ``social.forget_timelines`` job).

    The repair queued when a fan-out or a follow change dies: the home
    timelines of ``account_ids`` and, with ``followers_of``, that author's own
    and every follower's. Deleting is the one write that needs no knowledge
    of what was missed, and costs each warm reader one rebuild.
    """
    keys = [home_key(a) for a in account_ids]
    if followers_of is not None:
        author = followers_of
        # The mark goes too: a big author's next post announces the link anew.
        keys += [home_key(author), author_key(author), _announced_key(author)]
    await services.timelines.forget(*keys)
    if followers_of is not None:

        async def forget(followers: _Followers) -> None:
            await services.timelines.forget(*(home_key(f) for f in followers.ids))

        await _each_follower(services, followers_of, forget)


async def _or_owe(services: Services, author_id: str, work: Awaitable[None]) -> None:
    """Run a job's timeline writes; if the store fails, owe what they touch.

    The job is retried, but until then the timelines it missed would be
    served without its change once the store answers again. So all of them
    (the author's and every follower's) are owed a deletion and rebuilt.
    """
    try:
        await work
    except CacheBackendError:
        timelines = services.timelines
        timelines.owe_deletion([home_key(author_id), author_key(author_id)])

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

    Run in the request after a follow or unfollow, and again as the
    ``social.follow_timeline`` job; either order gives the same result.
    """
    timelines = services.timelines
    key = home_key(follower_id)
    ids: list[str] = []
    big = False
    async with services.db.read_session() as session:
        following = await _follows(session, follower_id, followee_id)
        if following:
            followers = await _follower_count(session, followee_id)
            big = followers > services.settings.fanout_max_followers
            if not big:  # a big account's posts come through the link
                recent = _recent_posts(followee_id, timelines.cap)
                ids = list((await session.scalars(recent)).all())
    if not following:
        # The followee's posts leave the timeline with it; a build in
        # progress that read the follow is void too.
        await timelines.forget(key)
        return
    written = await timelines.add([key], ids=ids, links=[followee_id] if big else [])
    if written:
        async with services.db.read_session() as session:
            if not await _follows(session, follower_id, followee_id):
                await timelines.forget(key)  # unfollowed meanwhile


async def _follows(session: AsyncSession, follower_id: str, followee_id: str) -> bool:
    found = await session.scalar(
        select(Follow.id).where(
            Follow.follower_id == follower_id, Follow.followee_id == followee_id
        )
    )
    return found is not None


async def _follower_count(session: AsyncSession, account_id: str) -> int:
    count = await session.scalar(
        select(AccountStats.follower_count).where(AccountStats.account_id == account_id)
    )
    return int(count or 0)
