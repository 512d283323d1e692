"""Trending: posts ranked by their engagement, each event decaying with age.

Scores. A post's score is the sum of its events' weights, each times
``2 ** ((t - epoch) / HALF_LIFE)`` for the event's time ``t``: the post's
creation weighs 1, a like 1, a comment 2. This is forward decay: rather
than every score shrinking as time passes, each event weighs more than one
a moment older, by the same factor for every post. So the order of two
posts changes only when one of them gets an event, engagement a half-life
old counts half as much as engagement now, and keeping a score up to date
is adding one number (``ZINCRBY``). Times are whole minutes, in the writes
and the rebuild alike, so that both add up the same numbers; and each
weight is a whole multiple of 2**-20, so that any order of adding them (the
writes' order of commits, the rebuild's of minutes) and taking them away
again (an unlike) gives the same score to the last bit, while a score stays
under 2**33 (half a million likes in a week's last hours; past that, only
that post's last bits can differ). Without it, a post's score kept up and
rebuilt differed in the last bit (found by a trial: 133.2815555244552 and
133.28155552445523), which could order two tied posts differently after a
rebuild. The quantum is 2**-20 of a like at the week's start: a like of
the window's oldest post (72 hours, six half-lives, before it) is weighed
to within 0.003%, and one more than twenty half-lives older weighs nothing.

Epochs. An event's weight grows by 2**14 in a week (half-life 12 hours).
To stay far from overflow, and from adding numbers of very different size,
the epoch is the start of the current week (weeks counted from the Unix
epoch), and each week has a ranking of its own (``trending:{week}``, see
``petpal.platform.rankings``). The first read in a new week finds its
ranking missing and rebuilds it from the database, as after a Redis restart
or eviction; a week's ranking expires a day after the week.

Rebuilding. The most engaged and the newest posts of the window are
candidates, to bound the work on a busy day: a post in neither set has no
more engagement than the least engaged candidate and is older than the
newest ones, so it could only rank near the end. Each set holds
``TRENDING_CANDIDATES`` posts, or more while a few authors hold so many of
them that a snapshot could not be filled from them. Their scores are summed
from the rows: each post's creation, and its likes and comments counted per
minute. A ranking holds the best ``TRENDING_KEEP`` posts; new posts join it
as they are made and the lowest fall out.

Writes. The service calls ``record_event`` after the commit of each post,
like, comment, unlike and deleted comment, and ``remove_post`` after a
post's deletion, in the request: one round trip, and the change shows in
the next ranking read. Best effort: a failed write never fails the like; it
owes the ranking a deletion, so the next read rebuilds it from the rows.
Not a job: adding is not idempotent, and a job may run twice, which would
count a like twice; and an outbox row for every like would double the cost
of the most frequent write. An unlike or a deleted comment subtracts exactly
what its event added, dated as the event (its row holds the time), so the
ranking stays what a rebuild from the rows would give. Events of posts
older than the window are not recorded: pages never show those posts. A
post deleted while a rebuild reads the rows may come back with its result;
pages still never show it (below), and it falls out as it ages.

Rows that vanish by a cascade (an account deleted with its likes) are not
events: the recount that follows deletes the ranking (``forget_ranking``),
and its next reader rebuilds it from the rows that remain.

Reading. A page-walk ranks once and reads a snapshot of ids. A new walk
takes the top of the ranking (one round trip, no SQL), drops the posts
that left the window (and takes them out of the ranking), keeps
``TRENDING_PER_AUTHOR`` posts per author (members are
``post_id:author_id``, so this needs nothing else) and stores the ids as a
snapshot. New walks share one snapshot for ``TRENDING_TTL`` seconds, which
bounds how many are stored. The page's counts come from the cache, which
also drops posts deleted since the snapshot was made; a page reads on past
them in the snapshot, so that it is full whenever more posts follow.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import typing
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    cast,
    extract,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from ulid import ULID

from petpal.platform.cache import CacheBackendError
from petpal.platform.db import utcnow
from petpal.platform.errors import RETRY_AFTER_SECONDS, ProblemError
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.pagination import (
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
)
from petpal.platform.rankings import trim_threshold
from petpal.platform.services import Services
from petpal.platform.wire import WirePage
from petpal.social.models import Comment, Like, Post
from petpal.social.views import Counted, counts_of, post_wires

POST_WEIGHT = 1
LIKE_WEIGHT = 1
COMMENT_WEIGHT = 2
HALF_LIFE_MINUTES = 12 * 60
EPOCH_MINUTES = 7 * 24 * 60

# A new walk reads the ranking afresh at most this often; each read stores a
# snapshot, kept TRENDING_SNAPSHOT_TTL so that a walk begun on it can finish.
TRENDING_TTL = 5.0
TRENDING_SNAPSHOT_TTL = 15 * 60.0
TRENDING_SIZE = 500
TRENDING_PER_AUTHOR = 3
# Ranking members read for a snapshot: enough to fill it after the cap per
# author, unless a few authors hold most of the top; then the whole ranking
# is read.
TRENDING_READ = 4 * TRENDING_SIZE
# Posts a ranking holds; the lowest fall out once there are a tenth more.
TRENDING_KEEP = 5000
# Posts a rebuild considers, from each of two angles (see the module), at
# the least.
TRENDING_CANDIDATES = 1000

_CURRENT_KEY = "trending:current"
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)


def _snapshot_key(snapshot_id: str) -> str:
    return f"trending:snapshot:{snapshot_id}"


def _ranking_key(epoch: int) -> str:
    return f"trending:{epoch}"


def _member(post_id: str, author_id: str) -> str:
    return f"{post_id}:{author_id}"


def _minute(moment: datetime) -> int:
    """Whole minutes from the Unix epoch to ``moment``, rounded down."""
    return (moment - _UNIX_EPOCH) // _MINUTE


def epoch_of(moment: datetime) -> int:
    """The week ``moment`` falls in: the epoch its ranking's weights grow from."""
    return _minute(moment) // EPOCH_MINUTES


# Every weight is a whole number of these (see the module).
_QUANTA_PER_UNIT = 2.0**20


def decayed_weight(weight: int, minute: int, epoch: int) -> float:
    """What an event of ``weight`` at ``minute`` adds to a score in ``epoch``."""
    growth = math.pow(2.0, (minute - epoch * EPOCH_MINUTES) / HALF_LIFE_MINUTES)
    return weight * round(growth * _QUANTA_PER_UNIT) / _QUANTA_PER_UNIT


def _id_floor(moment: datetime) -> str:
    """The smallest id that can be made at ``moment`` or later."""
    return str(ULID.from_int(int(moment.timestamp() * 1000) << 80))


def _window(services: Services) -> timedelta:
    return timedelta(hours=services.settings.trending_window_hours)


# --- writing --------------------------------------------------------------------


async def record_event(
    services: Services,
    post_id: str,
    author_id: str,
    weight: int,
    happened_at: datetime,
    *,
    undone: bool = False,
) -> None:
    """Add an event of a post to its score, after the event's commit.

    ``undone``: the event was taken back (an unlike, a deleted comment), and
    what it added at ``happened_at`` is subtracted. Best effort (see the
    module): never raises for the store.
    """
    now = utcnow()
    if post_id < _id_floor(now - _window(services)):
        return
    epoch = epoch_of(now)
    delta = decayed_weight(weight, _minute(happened_at), epoch)
    # A build in progress counts from the database what changed before its
    # cutoff: a like by its time, an unlike by the time its row went.
    changed_at = now if undone else happened_at
    with contextlib.suppress(CacheBackendError):
        await services.rankings.add(
            _ranking_key(epoch),
            {_member(post_id, author_id): -delta if undone else delta},
            changed_at,
            keep=TRENDING_KEEP,
        )


async def remove_post(services: Services, post_id: str, author_id: str) -> None:
    """Take a deleted post out of the ranking. Best effort, like ``record_event``."""
    with contextlib.suppress(CacheBackendError):
        await services.rankings.remove(
            _ranking_key(epoch_of(utcnow())), [_member(post_id, author_id)]
        )


async def forget_ranking(services: Services) -> None:
    """Delete the current ranking, for its next read to rebuild from the rows.

    For rows that changed other than through the writes above (likes and
    comments gone by a cascade, which only a recount notices): their events
    cannot be subtracted, having no rows left to date them. Best effort: a
    deletion the store fails is owed and made once it answers.
    """
    with contextlib.suppress(CacheBackendError):
        await services.rankings.forget(_ranking_key(epoch_of(utcnow())))


# --- rebuilding -----------------------------------------------------------------


def _minute_of(services: Services, column: InstrumentedAttribute[datetime]) -> Any:
    """SQL for ``_minute`` of a time column, with no parameters (it is grouped by)."""
    if services.db.is_sqlite:
        seconds = func.strftime(literal_column("'%s'"), column)
        return cast(seconds, Integer) // literal_column("60", Integer)
    minutes = func.floor(extract("epoch", column) / literal_column("60"))
    return cast(minutes, BigInteger)


def _events_per_minute(
    services: Services,
    model: type[Like] | type[Comment],
    weight: int,
    post_ids: list[str],
    cutoff: datetime,
) -> Select[Any]:
    minute = _minute_of(services, model.created_at)
    return (
        select(
            model.post_id,
            minute.label("minute"),
            literal_column(str(weight), Integer).label("weight"),
            func.count().label("events"),
        )
        .where(model.post_id.in_(post_ids), model.created_at < cutoff)
        .group_by(model.post_id, minute)
    )


async def _candidates(
    session: AsyncSession, query: Select[str, str, datetime]
) -> list[Any]:
    """The first rows of ``query`` (ordered): ``TRENDING_CANDIDATES``, or
    more while they cannot fill a snapshot at ``TRENDING_PER_AUTHOR`` posts
    an author (found by a trial: seven authors of 300 liked posts each were
    all of both sets, and a rebuilt ranking held nobody else). Always a
    first part of the order, so a post left out ranks below all of them by
    that order (a cap per author left out posts of many likes, which a like
    then put into the ranking with its own weight alone: another trial)."""
    limit = TRENDING_CANDIDATES
    while True:
        rows = (await session.execute(query.limit(limit))).all()
        per_author = Counter(row.author_id for row in rows)
        shown = sum(min(n, TRENDING_PER_AUTHOR) for n in per_author.values())
        if len(rows) < limit or shown >= TRENDING_SIZE:
            return list(rows)
        limit *= 4


async def _load_scores(
    services: Services, epoch: int, cutoff: datetime
) -> dict[str, float]:
    """The scores of the candidate posts, from the events before ``cutoff``."""
    engagement: ColumnElement[int] = (
        LIKE_WEIGHT * Post.like_count + COMMENT_WEIGHT * Post.comment_count
    )
    columns = select(Post.id, Post.author_id, Post.created_at).where(
        Post.id >= _id_floor(cutoff - _window(services))
    )
    async with services.db.read_session() as session:
        engaged = await _candidates(
            session,
            columns.where(or_(Post.like_count > 0, Post.comment_count > 0)).order_by(
                engagement.desc(), Post.id.desc()
            ),
        )
        candidates = {row.id: row for row in engaged}
        newest = await _candidates(session, columns.order_by(Post.id.desc()))
        candidates.update((row.id, row) for row in newest)
        if not candidates:
            return {}
        ids = list(candidates)
        events = await session.execute(
            union_all(
                _events_per_minute(services, Like, LIKE_WEIGHT, ids, cutoff),
                _events_per_minute(services, Comment, COMMENT_WEIGHT, ids, cutoff),
            ).order_by(literal_column("minute"))
        )
        rows = events.all()
    scores: dict[str, float] = {}
    for post in candidates.values():
        if post.created_at < cutoff:
            minute = _minute(post.created_at)
            scores[post.id] = decayed_weight(POST_WEIGHT, minute, epoch)
    for row in rows:
        # Exact, in any order (see the module): the writes' sum to the bit.
        added = row.events * decayed_weight(row.weight, int(row.minute), epoch)
        scores[row.post_id] = scores.get(row.post_id, 0.0) + added
    return {_member(i, candidates[i].author_id): s for i, s in scores.items()}


# --- reading --------------------------------------------------------------------


async def _top_members(services: Services, now: datetime, count: int) -> list[str]:
    """The ranking's ``count`` top members, rebuilt first if it is missing."""
    epoch = epoch_of(now)
    key = _ranking_key(epoch)
    load = functools.partial(_load_scores, services, epoch)
    if not services.cache.enabled:
        # The path the cache benchmark measures as its baseline.
        scores = await load(now)
    else:
        try:
            found = await services.rankings.top(key, count)
        except CacheBackendError:
            found = None  # the build below then serves the rows, unstored
        if found is not None:
            return found
        epoch_end = (epoch + 1) * EPOCH_MINUTES * _MINUTE + _UNIX_EPOCH
        scores = await services.rankings.build(
            key,
            load,
            now=now,
            keep=TRENDING_KEEP,
            ttl=(epoch_end - now + timedelta(days=1)).total_seconds(),
        )
    return heapq.nlargest(count, scores, key=lambda m: (scores[m], m))


async def _rank_trending(services: Services) -> bytes:
    """A new snapshot: the ranking's top, in the window, capped per author."""
    now = utcnow()
    floor = _id_floor(now - _window(services))
    # With the cache off every read loads the scores from the rows: all of
    # them at once, then.
    whole = trim_threshold(TRENDING_KEEP)  # the most a ranking holds
    count = TRENDING_READ if services.cache.enabled else whole
    while True:
        per_author: Counter[str] = Counter()
        ranked: list[str] = []
        aged: list[str] = []
        members = await _top_members(services, now, count)
        for member in members:
            post_id, _, author_id = member.partition(":")
            if post_id < floor:
                aged.append(member)
                continue
            if (
                len(ranked) == TRENDING_SIZE
                or per_author[author_id] >= TRENDING_PER_AUTHOR
            ):
                continue
            per_author[author_id] += 1
            ranked.append(post_id)
        if (
            len(ranked) == TRENDING_SIZE
            or len(members) < count
            or count > TRENDING_KEEP
        ):
            break
        # A few authors (or aged posts) hold most of the top: the rest of
        # the ranking has posts the snapshot has room for (found by a trial:
        # seven accounts of 300 posts each hid every other post).
        count = whole
    if aged:
        with contextlib.suppress(CacheBackendError):
            await services.rankings.remove(_ranking_key(epoch_of(now)), aged)
    return orjson.dumps({"snapshot": new_id(), "ids": ranked})


class _Snapshot(TypedDict):
    snapshot: str
    ids: list[str]


async def _trending_snapshot(
    services: Services, snapshot_id: str | None
) -> _Snapshot | None:
    """The ranked snapshot a page-walk started on (None: a new walk); None if gone."""
    if snapshot_id is None:
        blob = await services.cache.get_or_load(
            _CURRENT_KEY, lambda: _rank_trending(services), ttl=TRENDING_TTL
        )
        if blob is None:
            return None  # unreachable: a ranking is always some bytes
        current = typing.cast(_Snapshot, orjson.loads(blob))
        kept = blob

        async def keep() -> bytes:
            return kept

        # Kept apart and longer than the current one, so that a walk that
        # began on it can finish after new walks have moved on; and out of
        # the cache's reach (``Services.walks``).
        await services.walks.get_or_load(
            _snapshot_key(current["snapshot"]), keep, ttl=TRENDING_SNAPSHOT_TTL
        )
        return current

    async def gone() -> None:
        return None

    blob = await services.walks.get_or_load(
        _snapshot_key(snapshot_id), gone, missing_ttl=1.0
    )
    return None if blob is None else typing.cast(_Snapshot, orjson.loads(blob))


def _trending_position(key: dict[str, Any]) -> tuple[str, int]:
    snapshot_id, start = key.get("snapshot"), key.get("at")
    if (
        not isinstance(snapshot_id, str)
        or not is_valid_id(snapshot_id)
        or not isinstance(start, int)
        or isinstance(start, bool)
        or not 0 < start <= TRENDING_SIZE
    ):
        raise InvalidCursorError()
    return snapshot_id, start


async def trending_feed(
    services: Services, viewer_id: str | None, cursor: str | None, limit: int
) -> WirePage:
    """The trending posts, ranked once per snapshot and paged within it.

    The cursor carries the snapshot's id and a position in it, so a walk over
    the pages sees one fixed order (no repeats, no skips) even though the
    scores beneath change with every like. A walk whose snapshot is gone
    (15 minutes after it was made, with its process embedded, or never
    stored, Redis being away when it began) gets 400 ``walk_expired`` and
    starts again; one whose snapshot cannot be read just now, a 503.
    """
    scope = "trending"
    snapshot_id: str | None = None
    start = 0
    if cursor is not None:
        snapshot_id, start = _trending_position(
            decode_cursor(services.secret, scope, cursor)
        )
    snapshot = await _trending_snapshot(services, snapshot_id)
    if snapshot is None:
        if services.walks.bypassed:
            # The snapshot may well be there, on a Redis this process cannot
            # reach just now (found by a trial: a walk a few seconds old was
            # told it had ended, while another process went on with it).
            raise ProblemError(
                503,
                "cache_unavailable",
                "this trending walk's order cannot be read just now; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        raise ProblemError(
            400,
            "walk_expired",
            "this trending walk's order is no longer kept (a walk keeps it "
            f"{TRENDING_SNAPSHOT_TTL / 60:.0f} minutes); start again without a cursor",
        )
    all_ids: list[str] = snapshot["ids"]
    # Counts from the cache, which also drops the posts deleted since the
    # snapshot was made; the page reads on past them, so that it is full
    # whenever the snapshot holds more.
    in_rank_order: list[Counted] = []
    position = start
    while len(in_rank_order) < limit and position < len(all_ids):
        ids = all_ids[position : position + limit - len(in_rank_order)]
        position += len(ids)
        by_id = await counts_of(services, ids)
        in_rank_order += [by_id[i] for i in ids if i in by_id]
    next_cursor = None
    if position < len(all_ids):
        next_cursor = encode_cursor(
            services.secret, scope, {"snapshot": snapshot["snapshot"], "at": position}
        )
    wires = await post_wires(
        services,
        [c.id for c in in_rank_order],
        viewer_id,
        {c.id: c for c in in_rank_order},
    )
    return WirePage(wires, next_cursor)
