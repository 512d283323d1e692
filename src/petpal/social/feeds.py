"""Pages of posts read from capped timelines, and the timelines everyone shares.

Every feed of posts newest first (an account's home, an author's posts, the
public feed, a hashtag) is a list of ids kept in capped timelines
(:mod:`petpal.platform.timelines`) and read through ``timeline_page``:

- A warm page is one script call for the ids, then two cache round trips
  for the counts, the viewer's likes and the post views
  (``views.post_wires``): no SQL.
- A missing (or expired) timeline is rebuilt from the database at once; a
  rebuild that takes longer than ``timeline_rebuild_budget_seconds`` goes on
  in the background, and this page comes from the database.
- A page below what the timelines hold (past the cap), the cache turned off,
  or the store failing: the page comes from the database, by the query each
  feed had before it had timelines. Cursors are the same either way, "below
  the last id": ids are ULIDs, so a walk returns each post once, whatever is
  posted or deleted meanwhile, wherever each of its pages came from.
- A page never shows a deleted post: its counts come through the
  ``post-counts`` cache, which the deletion invalidates and which caches "not
  found", and a post without counts is left out, and taken out of the
  timelines it was read from.

Home timelines, one per reader and fanned out on write, are
:mod:`petpal.social.home`'s. This module keeps the timelines read alike by
everyone, each written by whoever creates a post (in the request, best
effort, and again by the ``social.fanout`` job) and retracted by
``social.retract``:

- ``author:{id}``: an author's recent posts, read by their profile's post
  list and merged into the home pages of the followers of big accounts;
- ``public``: everybody's recent posts;
- ``tag:{tag}``: the recent posts of one hashtag.

Like home timelines, they exist only while read and expire
``timeline_ttl_seconds`` after the last read, so a write costs one look-up
for the tags nobody browses. A hashtag page asked for any name builds a
timeline, empty when nobody used it: the TTL and the store's memory policy
bound those.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from prometheus_client import Counter
from sqlalchemy import Select, select

from petpal.platform.cache import CacheBackendError
from petpal.platform.services import Services
from petpal.platform.timelines import TimelineContent, TimelineSlice
from petpal.platform.wire import WirePage
from petpal.social.models import Post, PostTag
from petpal.social.views import (
    after_id,
    counted_query,
    next_cursor,
    post_wires,
    read_counted,
)

PUBLIC_KEY = "public"

FEED_PAGES = Counter(
    "petpal_feed_pages_total",
    "Feed pages by feed and where their ids came from",
    ["feed", "source"],
)

# Up to ``count`` ids below ``before`` of each timeline a page merges, with
# the timelines' names; None when the page must come from the database.
ReadSlices = Callable[
    [str | None, int], Awaitable[tuple[list[TimelineSlice], list[str]] | None]
]
# The feed's page (ids with their counts) below ``before``, from the database.
PageQuery = Callable[[str | None, int], Select[str, int, int]]
Load = Callable[[], Awaitable[TimelineContent]]


def author_key(account_id: str) -> str:
    return f"author:{account_id}"


def tag_key(tag: str) -> str:
    return f"tag:{tag}"


def public_keys(tags: Sequence[str]) -> list[str]:
    """The public timeline and those of the hashtags ``tags``."""
    return [PUBLIC_KEY, *(tag_key(t) for t in tags)]


def shared_keys(author_id: str, tags: Sequence[str]) -> list[str]:
    """The shared timelines a post of ``author_id`` with hashtags ``tags`` is in."""
    return [author_key(author_id), *public_keys(tags)]


# --- reading --------------------------------------------------------------------


async def timeline_page(
    services: Services,
    feed: str,
    scope: str,
    cursor: str | None,
    limit: int,
    viewer_id: str | None,
    read: ReadSlices,
    query: PageQuery,
) -> WirePage:
    """A page of a feed whose ids ``read`` gives, or ``query`` when it cannot.

    ``scope`` names the list in its cursors; ``feed`` in the page metrics.
    """
    before = after_id(services, scope, cursor)
    found = await _from_timelines(services, feed, read, before, limit + 1)
    if found is None:
        async with services.db.read_session() as session:
            counted = await read_counted(session, query(before, limit + 1))
        ids = [c.id for c in counted]
        wires = await post_wires(
            services, ids[:limit], viewer_id, {c.id: c for c in counted}
        )
    else:
        ids, sources = found
        wires = await post_wires(services, ids[:limit], viewer_id)
        shown = {wire["id"] for wire in wires}
        gone = [i for i in ids[:limit] if i not in shown]
        if gone:
            # Deleted (or their author is): never shown, and out of the way
            # now. Should the store fail, the retract job removes them too.
            with contextlib.suppress(CacheBackendError):
                await services.timelines.remove(sources, gone)
    return WirePage(wires, next_cursor(services, scope, ids[:limit], len(ids) > limit))


async def _from_timelines(
    services: Services, feed: str, read: ReadSlices, before: str | None, count: int
) -> tuple[list[str], list[str]] | None:
    """Up to ``count`` ids below ``before`` and the timelines they came from;
    None when the page must come from the database."""
    pages = FEED_PAGES.labels
    if not services.cache.enabled:
        pages(feed, "cache_off").inc()
        return None
    try:
        found = await read(before, count)
    except CacheBackendError:
        pages(feed, "backend_error").inc()
        return None
    if found is None:
        pages(feed, "rebuild_over_budget").inc()
        return None
    slices, keys = found
    ids = merge(slices, before, count)
    if ids is None:
        pages(feed, "past_timeline").inc()
        return None
    pages(feed, "timeline").inc()
    return ids, keys


async def build_slice(
    services: Services, key: str, load: Load, before: str | None, count: int
) -> TimelineSlice | None:
    """Rebuild the missing timeline ``key``; None if over the budget."""
    content = await services.timelines.build(
        key, load, services.settings.timeline_rebuild_budget_seconds
    )
    return None if content is None else content.slice(before, count)


def merge(
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


async def _read_one(
    services: Services, key: str, load: Load, before: str | None, count: int
) -> tuple[list[TimelineSlice], list[str]] | None:
    (found,) = await services.timelines.read([key], before, count)
    if found is None:
        found = await build_slice(services, key, load, before, count)
        if found is None:
            return None
    return [found], [key]


async def account_page(
    services: Services,
    account_id: str,
    viewer_id: str | None,
    cursor: str | None,
    limit: int,
) -> WirePage:
    """The posts of ``account_id``, newest first."""

    def query(before: str | None, count: int) -> Select[str, int, int]:
        own = counted_query().where(Post.author_id == account_id)
        return _newest(own, before, count)

    load = partial(load_author, services, account_id)
    read = partial(_read_one, services, author_key(account_id), load)
    scope = f"posts:{account_id}"
    return await timeline_page(
        services, "account", scope, cursor, limit, viewer_id, read, query
    )


async def public_page(
    services: Services, viewer_id: str | None, cursor: str | None, limit: int
) -> WirePage:
    """Everybody's posts, newest first."""

    def query(before: str | None, count: int) -> Select[str, int, int]:
        return _newest(counted_query(), before, count)

    read = partial(_read_one, services, PUBLIC_KEY, partial(_load_public, services))
    return await timeline_page(
        services, "public", "public", cursor, limit, viewer_id, read, query
    )


async def tag_page(
    services: Services,
    tag: str,
    viewer_id: str | None,
    cursor: str | None,
    limit: int,
) -> WirePage:
    """The posts with the (canonical) hashtag ``tag``, newest first."""

    def query(before: str | None, count: int) -> Select[str, int, int]:
        # Keyed on post_tags' own (tag, post_id) primary key, so the page is
        # a range scan of that index.
        tagged = (
            counted_query()
            .join(PostTag, PostTag.post_id == Post.id)
            .where(PostTag.tag == tag)
        )
        if before is not None:
            tagged = tagged.where(PostTag.post_id < before)
        return tagged.order_by(PostTag.post_id.desc()).limit(count)

    load = partial(_load_tag, services, tag)
    read = partial(_read_one, services, tag_key(tag), load)
    return await timeline_page(
        services, "tag", f"tag:{tag}", cursor, limit, viewer_id, read, query
    )


def _newest(
    query: Select[str, int, int], before: str | None, count: int
) -> Select[str, int, int]:
    if before is not None:
        query = query.where(Post.id < before)
    return query.order_by(Post.id.desc()).limit(count)


# --- building -------------------------------------------------------------------


async def _load_ids(services: Services, query: Select[str]) -> TimelineContent:
    cap = services.timelines.cap
    async with services.db.read_session() as session:
        ids = list((await session.scalars(query.limit(cap))).all())
    return TimelineContent(ids, len(ids) < cap)


async def load_author(services: Services, author_id: str) -> TimelineContent:
    return await _load_ids(services, recent_posts(author_id))


def recent_posts(author_id: str) -> Select[str]:
    """The ids of ``author_id``'s posts, newest first (one index range)."""
    return select(Post.id).where(Post.author_id == author_id).order_by(Post.id.desc())


async def _load_public(services: Services) -> TimelineContent:
    return await _load_ids(services, select(Post.id).order_by(Post.id.desc()))


async def _load_tag(services: Services, tag: str) -> TimelineContent:
    tagged = (
        select(PostTag.post_id)
        .where(PostTag.tag == tag)
        .order_by(PostTag.post_id.desc())
    )
    return await _load_ids(services, tagged)
