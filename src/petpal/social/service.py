"""Posts, follows, likes, comments, hashtags and feeds.

Other services use only ``account_counts`` and ``is_following``; the tables
stay private to this package. How a page of posts is read is told in
:mod:`petpal.social.views`, where feeds find their ids in
:mod:`petpal.social.feeds` (home feeds in :mod:`petpal.social.home`),
trending in :mod:`petpal.social.trending`; a post's first page of comments
is its cached head (``_comments_head``).

Counters (likes, comments, followers, posts) are denormalized and kept exact:
each write changes a counter only in the transaction that really inserted or
deleted the row it counts, as the statement's row count says.
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
from prometheus_client import Counter as MetricCounter
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from petpal.identity.schemas import AccountSummary
from petpal.identity.service import (
    ensure_account_exists,
    get_summaries,
    ids_for_usernames,
    on_account_deletion,
    resolve_username,
    summary_wires,
)
from petpal.media.service import queue_release, require_ready_media
from petpal.platform.cache import CacheBackendError, WriteMarks
from petpal.platform.db import Base, rowcount, utcnow
from petpal.platform.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.jobs import (
    BACKSTOP_DELAY,
    enqueue,
    enqueue_chunked,
    enqueue_when,
    job_parameters,
    release_backstop,
)
from petpal.platform.pagination import MAX_LIMIT, Page
from petpal.platform.services import Services
from petpal.platform.text import (
    HASHTAG_PATTERN,
    extract_hashtags,
    extract_mentions,
)
from petpal.platform.wire import Wire, WirePage
from petpal.social import feeds, home, trending
from petpal.social.models import (
    TAG_MAX_LENGTH,
    AccountStats,
    Comment,
    Follow,
    Like,
    Post,
    PostMedia,
    PostMention,
    PostPet,
    PostTag,
)
from petpal.social.schemas import (
    CommentView,
    LikeState,
    PostCreate,
    PostEdit,
)
from petpal.social.views import (
    COUNTS_TTL,
    POST_TTL,
    after_id,
    counts_key,
    counts_of,
    liked_key,
    next_cursor,
    post_key,
    post_wires,
)

MAX_HASHTAGS = 30
# A post's first page of comments, for any limit the API takes, is served
# from this many cached rows (see ``_comments_head``).
COMMENTS_HEAD_SIZE = MAX_LIMIT
COMMENTS_HEAD_TTL = 600.0

SOCIAL_WRITES = MetricCounter(
    "petpal_social_writes_total",
    "Social writes that changed something, by action",
    ["action"],
)


def _counts_key(account_id: str) -> str:
    return f"counts:{account_id}"


def comments_head_key(post_id: str) -> str:
    return f"comments-head:{post_id}"


# --- small helpers --------------------------------------------------------------


def _require_id(value: str, what: str) -> None:
    # A malformed id names nothing: 404, like any other unknown id.
    if not is_valid_id(value):
        raise NotFoundError(what)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


async def _insert_if_absent(
    session: AsyncSession, model: type[Base], values: dict[str, Any]
) -> bool:
    """Insert a row unless its key is taken; True when a row was really added.

    ``ON CONFLICT DO NOTHING`` makes the check and the insert one atomic
    statement, so a counter bumped only when this returns True stays exact
    under any number of concurrent requests.
    """
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        statement: Any = postgresql.insert(_table(model)).on_conflict_do_nothing()
    else:
        statement = sqlite.insert(_table(model)).on_conflict_do_nothing()
    return rowcount(await connection.execute(statement.values(values))) == 1


async def _ensure_stats(session: AsyncSession, account_id: str) -> None:
    await _insert_if_absent(
        session,
        AccountStats,
        {
            "account_id": account_id,
            "follower_count": 0,
            "following_count": 0,
            "post_count": 0,
        },
    )


async def _bump_stats(session: AsyncSession, account_id: str, **deltas: int) -> None:
    """Add ``deltas`` to an account's counters, in the caller's transaction.

    One statement: the row is made (with the deltas as its counts) if the
    account has none yet, or its counts are added to, atomically.
    """
    connection = await session.connection()
    values = {
        "account_id": account_id,
        "follower_count": 0,
        "following_count": 0,
        "post_count": 0,
        **deltas,
    }
    changes = {
        name: getattr(AccountStats, name) + delta for name, delta in deltas.items()
    }
    if connection.dialect.name == "postgresql":
        statement: Any = postgresql.insert(_table(AccountStats))
    else:
        statement = sqlite.insert(_table(AccountStats))
    await connection.execute(
        statement.values(values).on_conflict_do_update(
            index_elements=[AccountStats.account_id], set_=changes
        )
    )


def _counting_follows(upsert: Any) -> Any:
    """``upsert``, an insert of the two accounts' counter rows (see
    ``_follow_stats_parameters``), adding each row's deltas to the counters
    it finds and answering each row's counts after the change."""
    excluded = upsert.excluded
    return upsert.on_conflict_do_update(
        index_elements=[AccountStats.account_id],
        set_={
            "follower_count": AccountStats.follower_count + excluded.follower_count,
            "following_count": AccountStats.following_count + excluded.following_count,
        },
    ).returning(
        AccountStats.account_id,
        AccountStats.follower_count,
        AccountStats.following_count,
        AccountStats.post_count,
    )


# SQLite's, in the follow's transaction (PostgreSQL's is part of _FOLLOW and
# _UNFOLLOW below). Built once, with named parameters (see _LIKE below).
_FOLLOW_STATS = _counting_follows(
    sqlite.insert(_table(AccountStats)).values(
        [
            {
                "account_id": bindparam(f"{row}_id"),
                "follower_count": bindparam(f"{row}_followers"),
                "following_count": bindparam(f"{row}_following"),
                "post_count": 0,
            }
            for row in ("first", "second")
        ]
    )
)


async def _bump_follow_stats(
    session: AsyncSession, follower_id: str, followee_id: str, delta: int
) -> dict[str, tuple[int, int, int]]:
    """Add ``delta`` to the follower's following count and to the followee's
    follower count, in the caller's transaction; both accounts' followers,
    following and posts after it, read under the rows' locks, which the
    transaction holds to its commit.
    """
    connection = await session.connection()
    result = await connection.execute(
        _FOLLOW_STATS, _follow_stats_parameters(follower_id, followee_id, delta)
    )
    return _follow_counts(result)


def _follow_stats_parameters(
    follower_id: str, followee_id: str, delta: int
) -> dict[str, Any]:
    """The counters' rows, ``first`` and ``second``, in id order.

    Two accounts following each other at the same moment would otherwise
    lock the two rows in opposite orders, and one of the transactions would
    die in a deadlock (on PostgreSQL). An insert takes its rows in the order
    given.
    """
    parameters: dict[str, Any] = {}
    for row, account_id in zip(
        ("first", "second"), sorted((follower_id, followee_id)), strict=True
    ):
        parameters[f"{row}_id"] = account_id
        parameters[f"{row}_followers"] = delta if account_id == followee_id else 0
        parameters[f"{row}_following"] = delta if account_id == follower_id else 0
    return parameters


def _follow_counts(rows: Iterable[Sequence[Any]]) -> dict[str, tuple[int, int, int]]:
    """Each account's (followers, following, posts) from the counters' rows."""
    return {str(row[0]): (int(row[1]), int(row[2]), int(row[3])) for row in rows}


# --- follows --------------------------------------------------------------------


async def do_follow(services: Services, follower_id: str, username: str) -> None:
    followee_id = await resolve_username(services, username)
    if followee_id == follower_id:
        raise InvalidInputError("cannot_follow_self", "an account cannot follow itself")
    marks = await _mark_follow_counts(services, follower_id, followee_id)
    try:
        change = await _change_follow(services, follower_id, followee_id, 1)
    except IntegrityError as exc:
        # One of the two accounts was deleted after its name was resolved.
        await ensure_account_exists(services, follower_id)
        raise NotFoundError("the account") from exc
    if change is not None:
        SOCIAL_WRITES.labels("follow").inc()
        job_id, counts = change
        await _store_follow_counts(services, marks, follower_id, counts)
        followers = counts[followee_id][0]
        await _apply_follow_change(
            services,
            job_id,
            home.followed(
                services, follower_id, followee_id, followers=followers, backstop=job_id
            ),
        )


async def do_unfollow(services: Services, follower_id: str, username: str) -> None:
    followee_id = await resolve_username(services, username)
    if followee_id == follower_id:
        raise InvalidInputError("cannot_follow_self", "an account cannot follow itself")
    marks = await _mark_follow_counts(services, follower_id, followee_id)
    change = await _change_follow(services, follower_id, followee_id, -1)
    if change is not None:
        SOCIAL_WRITES.labels("unfollow").inc()
        job_id, counts = change
        await _store_follow_counts(services, marks, follower_id, counts)
        await _apply_follow_change(
            services,
            job_id,
            home.unfollowed(services, follower_id, followee_id, backstop=job_id),
        )


# A follow or an unfollow is three writes made together: the follow's row,
# the two accounts' counters (_counting_follows) and the backstop job of the
# follower's timeline. On SQLite they are one transaction; on PostgreSQL one
# statement, the row's change and the job in WITH clauses, the counters and
# the job written only if the row changed: one round trip instead of five
# (BEGIN, three statements, COMMIT). Both answer the counters' rows as the
# change left them, none when there was nothing to change (followed
# already, or not followed).


async def _change_follow(
    services: Services, follower_id: str, followee_id: str, delta: int
) -> tuple[str, dict[str, tuple[int, int, int]]] | None:
    """Follow (``delta`` 1) or unfollow (-1): the backstop job's id and both
    accounts' counts, or None if there was nothing to change."""
    if services.db.is_sqlite:
        return await _change_follow_in_transaction(
            services, follower_id, followee_id, delta
        )
    job_id, parameters = job_parameters(
        _follow_job_payload(follower_id, followee_id), delay=BACKSTOP_DELAY
    )
    parameters.update(
        _follow_stats_parameters(follower_id, followee_id, delta),
        follower=follower_id,
        followee=followee_id,
    )
    if delta > 0:
        parameters.update(follow_id=new_id(), follow_at=utcnow())
    async with services.db.statement_session() as session:
        connection = await session.connection()
        counts = _follow_counts(
            await connection.execute(_FOLLOW if delta > 0 else _UNFOLLOW, parameters)
        )
    return (job_id, counts) if counts else None


async def _change_follow_in_transaction(
    services: Services, follower_id: str, followee_id: str, delta: int
) -> tuple[str, dict[str, tuple[int, int, int]]] | None:
    async with services.db.write_session() as session:
        if delta > 0:
            changed = await _insert_if_absent(
                session,
                Follow,
                {
                    "id": new_id(),
                    "follower_id": follower_id,
                    "followee_id": followee_id,
                    "created_at": utcnow(),
                },
            )
        else:
            connection = await session.connection()
            result = await connection.execute(
                delete(Follow).where(
                    Follow.follower_id == follower_id,
                    Follow.followee_id == followee_id,
                )
            )
            changed = rowcount(result) == 1
        if not changed:
            return None
        counts = await _bump_follow_stats(session, follower_id, followee_id, delta)
        job_id = enqueue(
            session,
            home.FOLLOW_JOB,
            _follow_job_payload(follower_id, followee_id),
            delay=BACKSTOP_DELAY,
        )
    return job_id, counts


def _follow_job_payload(follower_id: str, followee_id: str) -> dict[str, Any]:
    # A backstop: the request does the work itself, right after the change.
    return {"follower_id": follower_id, "followee_id": followee_id}


def _follow_change_statement(changed: Any) -> Any:
    """``changed`` (a WITH clause that returns the follow row it inserted or
    deleted), then, only if it returned one, the counters' upsert and the
    backstop job; answers the counters' rows."""
    happened = select(changed.c.id).exists()
    stats = _table(AccountStats)
    rows = union_all(
        *(
            select(
                bindparam(f"{row}_id", type_=stats.c.account_id.type),
                bindparam(f"{row}_followers", type_=Integer()),
                bindparam(f"{row}_following", type_=Integer()),
                literal(0, Integer()),
            ).where(happened)
            for row in ("first", "second")
        )
    )
    counted = _counting_follows(
        postgresql.insert(stats).from_select(
            ["account_id", "follower_count", "following_count", "post_count"], rows
        )
    ).cte("counted")
    job = enqueue_when(home.FOLLOW_JOB, happened).cte("job")
    return select(counted).add_cte(changed, job)


def _both_accounts_held() -> Any:
    """True once both accounts' rows are held (``FOR KEY SHARE``), which the
    follow's row waits on before the statement writes anything.

    An account's deletion holds its row first, then deletes its counters and
    follows. A follow took the counters' rows first and the account's only
    at its end (the foreign key's check), so the two could wait for each
    other, and PostgreSQL ended one: the follow answered 503 (found by a
    trial). Holding the accounts first, the follow waits for the deletion,
    holding nothing, and then finds the account gone (404); or the deletion
    waits for the follow.
    """
    accounts = Base.metadata.tables["accounts"]
    held = (
        select(accounts.c.id)
        .where(accounts.c.id.in_([bindparam("follower"), bindparam("followee")]))
        .with_for_update(read=True, key_share=True)
        .cte("held")
    )
    # A count reads every row (EXISTS would stop at the first).
    return select(func.count()).select_from(held).scalar_subquery() > 0


def _follow_statement() -> Any:
    follows = _table(Follow)
    row = select(
        bindparam("follow_id", type_=follows.c.id.type),
        bindparam("follower", type_=follows.c.follower_id.type),
        bindparam("followee", type_=follows.c.followee_id.type),
        bindparam("follow_at", type_=follows.c.created_at.type),
    ).where(_both_accounts_held())
    added = (
        postgresql.insert(follows)
        .from_select(["id", "follower_id", "followee_id", "created_at"], row)
        .on_conflict_do_nothing()
        .returning(follows.c.id)
        .cte("added")
    )
    return _follow_change_statement(added)


def _unfollow_statement() -> Any:
    removed = (
        delete(Follow)
        .where(
            Follow.follower_id == bindparam("follower"),
            Follow.followee_id == bindparam("followee"),
            _both_accounts_held(),
        )
        .returning(Follow.id)
        .cte("removed")
    )
    return _follow_change_statement(removed)


# Built once, as _LIKE is (PostgreSQL only).
_FOLLOW = _follow_statement()
_UNFOLLOW = _unfollow_statement()


async def _mark_follow_counts(
    services: Services, follower_id: str, followee_id: str
) -> WriteMarks:
    # Before the write: its upsert returns both accounts' counts, which
    # _store_follow_counts then stores, as a like stores a post's.
    return await services.cache.mark_for_write(
        _counts_key(follower_id), _counts_key(followee_id)
    )


async def _store_follow_counts(
    services: Services,
    marks: WriteMarks,
    follower_id: str,
    counts: dict[str, tuple[int, int, int]],
) -> None:
    """Cache both accounts' counts as the follow or unfollow left them, and
    drop the follower's cached set of followees, which it does not know
    whole. A profile of a much-followed account is read far more often than
    it changes, and needs no reload after each follow."""
    await asyncio.gather(
        services.cache.store_after_write(
            marks,
            {_counts_key(a): orjson.dumps(list(c)) for a, c in counts.items()},
            ttl=COUNTS_TTL,
        ),
        services.cache.invalidate(_following_key(follower_id)),
    )


async def _apply_follow_change(
    services: Services, job_id: str, change: Awaitable[None]
) -> None:
    # At once, so that the follower's next page shows the change; the job
    # committed with the follow repeats it should the timeline store fail
    # (at once) or this process die first (after its delay). Done here, the
    # change records the job done, and no relay or worker spends anything
    # on it.
    try:
        await change
    except CacheBackendError:
        await release_backstop(services.db, job_id)


async def list_followers(
    services: Services, username: str, cursor: str | None, limit: int
) -> Page[AccountSummary]:
    account_id = await resolve_username(services, username)
    return await _follow_page(
        services,
        f"followers:{account_id}",
        Follow.followee_id == account_id,
        Follow.follower_id,
        cursor,
        limit,
    )


async def list_following(
    services: Services, username: str, cursor: str | None, limit: int
) -> Page[AccountSummary]:
    account_id = await resolve_username(services, username)
    return await _follow_page(
        services,
        f"following:{account_id}",
        Follow.follower_id == account_id,
        Follow.followee_id,
        cursor,
        limit,
    )


async def _follow_page(
    services: Services,
    scope: str,
    condition: ColumnElement[bool],
    other: InstrumentedAttribute[str],
    cursor: str | None,
    limit: int,
) -> Page[AccountSummary]:
    """Accounts on the other end of ``condition``'s follows, newest follow first."""
    query = select(Follow.id, other).where(condition)
    after = after_id(services, scope, cursor)
    if after is not None:
        query = query.where(Follow.id < after)
    async with services.db.read_session() as session:
        rows = (
            await session.execute(query.order_by(Follow.id.desc()).limit(limit + 1))
        ).all()
    page = rows[:limit]
    summaries = await get_summaries(services, [row[1] for row in page])
    return Page[AccountSummary](
        items=[summaries[row[1]] for row in page if row[1] in summaries],
        next_cursor=next_cursor(
            services, scope, [row[0] for row in page], len(rows) > limit
        ),
    )


# --- posts ----------------------------------------------------------------------


def _check_post_input(data: PostCreate) -> list[str]:
    """The post's canonical hashtags, once its lists and tags are acceptable."""
    if len(set(data.media_ids)) != len(data.media_ids):
        raise InvalidInputError("duplicate_media", "a media id appears more than once")
    if len(set(data.pet_ids)) != len(data.pet_ids):
        raise InvalidInputError("duplicate_pet", "a pet id appears more than once")
    return _caption_hashtags(data.caption)


def _caption_hashtags(caption: str) -> list[str]:
    """A caption's canonical hashtags, once there are not too many of them
    and none is too long."""
    hashtags = extract_hashtags(caption)
    if len(hashtags) > MAX_HASHTAGS:
        raise InvalidInputError(
            "too_many_hashtags", f"a caption may have at most {MAX_HASHTAGS} hashtags"
        )
    if any(len(tag) > TAG_MAX_LENGTH for tag in hashtags):
        raise InvalidInputError(
            "hashtag_too_long",
            f"a hashtag may have at most {TAG_MAX_LENGTH} characters",
        )
    return hashtags


async def _require_own_pets(
    session: AsyncSession, pet_ids: list[str], owner_id: str
) -> None:
    # Imported on use: pets may come to call social, and two services that
    # import each other at module level would make an import cycle.
    from petpal.pets.service import require_own_pets

    await require_own_pets(session, pet_ids, owner_id)


async def _mentioned(services: Services, caption: str) -> list[str]:
    """The ids of the accounts a caption mentions that exist, in its order."""
    names = extract_mentions(caption)
    found = await ids_for_usernames(services, names)
    return [found[name] for name in names if name in found]


def _caption_links(
    post_id: str, hashtags: Sequence[str], mentioned: Sequence[str]
) -> list[Base]:
    """The rows that link a post to its caption's hashtags and mentions."""
    return [
        *(
            PostTag(tag=tag, post_id=post_id, position=i)
            for i, tag in enumerate(hashtags)
        ),
        *(
            PostMention(post_id=post_id, account_id=account_id, position=i)
            for i, account_id in enumerate(mentioned)
        ),
    ]


async def do_create_post(services: Services, author_id: str, data: PostCreate) -> str:
    """Create a post of ``author_id``'s ready media; returns its id."""
    hashtags = _check_post_input(data)
    mentioned = await _mentioned(services, data.caption)
    post_id = new_id()
    created_at = utcnow()
    try:
        async with services.db.write_session() as session:
            await require_ready_media(session, data.media_ids, author_id)
            if data.pet_ids:
                await _require_own_pets(session, data.pet_ids, author_id)
            session.add(
                Post(
                    id=post_id,
                    author_id=author_id,
                    caption=data.caption,
                    like_count=0,
                    comment_count=0,
                    created_at=created_at,
                )
            )
            await session.flush()
            session.add_all(
                [
                    *(
                        PostMedia(post_id=post_id, position=i, media_id=media_id)
                        for i, media_id in enumerate(data.media_ids)
                    ),
                    *(
                        PostPet(post_id=post_id, position=i, pet_id=pet_id)
                        for i, pet_id in enumerate(data.pet_ids)
                    ),
                    *_caption_links(post_id, hashtags, mentioned),
                ]
            )
            await _bump_stats(session, author_id, post_count=1)
            enqueue(
                session, home.FANOUT_JOB, {"post_id": post_id, "author_id": author_id}
            )
    except IntegrityError as exc:
        # An account, photo or pet referenced above was deleted meanwhile
        # (a photo released by the post that showed it, say): told as it
        # would have been had it been gone before, not as a 409 to retry,
        # which could only fail again (found by a trial).
        await ensure_account_exists(services, author_id)
        async with services.db.read_session() as session:
            await require_ready_media(session, data.media_ids, author_id)
            if data.pet_ids:
                await _require_own_pets(session, data.pet_ids, author_id)
        raise await _reference_changed(services, author_id) from exc
    SOCIAL_WRITES.labels("post").inc()
    await services.cache.invalidate(
        _counts_key(author_id),
        post_key(post_id),
        counts_key(post_id),
        comments_head_key(post_id),
    )
    await home.deliver_in_request(services, author_id, post_id, hashtags)
    await trending.record_event(
        services, post_id, author_id, trending.POST_WEIGHT, created_at
    )
    return post_id


async def _reference_changed(services: Services, author_id: str) -> ConflictError:
    """The error for a post write whose foreign key failed: a 409, unless
    the author's own account is what is gone (a 401)."""
    await ensure_account_exists(services, author_id)
    return ConflictError(
        "reference_changed", "something this post refers to just changed; retry"
    )


async def do_edit_post(
    services: Services, post_id: str, account_id: str, data: PostEdit
) -> None:
    """Replace a post's caption; its hashtags and mentions follow it.

    The post keeps its id, so it keeps its place in every list, and a cursor
    taken before the edit goes on where it was: an edit never repeats or
    skips a post. The hashtag pages it leaves or joins are rebuilt from the
    database: their timelines are forgotten after the commit, and again by
    a job queued with it, should this process die first.
    """
    _require_id(post_id, "the post")
    hashtags = _caption_hashtags(data.caption)
    mentioned = await _mentioned(services, data.caption)
    try:
        async with services.db.write_session() as session:
            # The row's lock orders edits of one post: each replaces the
            # links the one before it wrote.
            author_id = await session.scalar(
                select(Post.author_id).where(Post.id == post_id).with_for_update()
            )
            if author_id is None:
                raise NotFoundError("the post")
            if author_id != account_id:
                raise ForbiddenError("only the author may edit a post")
            before = await session.scalars(
                select(PostTag.tag).where(PostTag.post_id == post_id)
            )
            moved = sorted(set(before.all()).symmetric_difference(hashtags))
            await session.execute(
                update(Post)
                .where(Post.id == post_id)
                .values(caption=data.caption, edited_at=utcnow())
            )
            for link in (PostTag, PostMention):
                await session.execute(delete(link).where(link.post_id == post_id))
            session.add_all(_caption_links(post_id, hashtags, mentioned))
            if moved:
                enqueue(session, home.FORGET_JOB, home.forget_tags_payload(moved))
    except IntegrityError as exc:
        # A mentioned account was deleted meanwhile.
        raise await _reference_changed(services, account_id) from exc
    SOCIAL_WRITES.labels("edit_post").inc()
    await services.cache.invalidate(post_key(post_id))
    if moved:
        # Best effort: the job forgets them again, and a failed deletion is
        # owed by the timelines and made once the store answers.
        with contextlib.suppress(CacheBackendError):
            await services.timelines.forget(*(feeds.tag_key(t) for t in moved))


async def do_delete_post(services: Services, post_id: str, account_id: str) -> None:
    """Delete a post; its likes, comments, tags and links go with it (cascade)."""
    _require_id(post_id, "the post")
    async with services.db.write_session() as session:
        author_id = await _require_post(session, post_id)
        if author_id != account_id:
            raise ForbiddenError("only the author may delete a post")
        # Read first: they go with the post, and name the timelines it is in.
        tags = await session.scalars(
            select(PostTag.tag).where(PostTag.post_id == post_id)
        )
        payload = {"post_id": post_id, "author_id": author_id, "tags": tags.all()}
        photos = await session.scalars(
            select(PostMedia.media_id).where(PostMedia.post_id == post_id)
        )
        photo_ids = photos.all()
        result = await session.execute(delete(Post).where(Post.id == post_id))
        if rowcount(result) != 1:
            # Deleted by another request since it was read: that one answers
            # 204 (found by a trial: on PostgreSQL eight deletions at once all
            # did, as none locks the row before its delete).
            raise NotFoundError("the post")
        await _bump_stats(session, author_id, post_count=-1)
        # Pages stop showing it once the invalidation below is done; the
        # job takes it out of the timelines.
        enqueue(session, home.RETRACT_JOB, payload)
        # Its photos stop being served, unless shown elsewhere too.
        queue_release(session, photo_ids)
    SOCIAL_WRITES.labels("delete_post").inc()
    await services.cache.invalidate(
        post_key(post_id),
        _counts_key(author_id),
        counts_key(post_id),
        comments_head_key(post_id),
    )
    await trending.remove_post(services, post_id, author_id)


async def get_post(services: Services, post_id: str, viewer_id: str | None) -> Wire:
    """``PostView``'s JSON shape of the post; 404 if it is gone."""
    _require_id(post_id, "the post")
    wires = await post_wires(services, [post_id], viewer_id)
    if not wires:
        raise NotFoundError("the post")
    return wires[0]


# --- likes ----------------------------------------------------------------------


async def do_like(services: Services, post_id: str, account_id: str) -> LikeState:
    _require_id(post_id, "the post")
    liked_at = utcnow()
    keys = counts_key(post_id), liked_key(account_id, post_id)
    marks = await services.cache.mark_for_write(*keys)
    try:
        if services.db.is_sqlite:
            inserted, counts, author_id = await _like_in_transaction(
                services, post_id, account_id, liked_at
            )
        else:
            inserted, counts, author_id = await _like_in_one_statement(
                services, post_id, account_id, liked_at
            )
    except IntegrityError as exc:
        # A missing post fails the insert's foreign key: no look-up first.
        await ensure_account_exists(services, account_id)
        raise NotFoundError("the post") from exc
    if inserted:
        SOCIAL_WRITES.labels("like").inc()
    await _store_like_state(services, marks, post_id, account_id, counts, liked=True)
    if inserted:
        await trending.record_event(
            services, post_id, author_id, trending.LIKE_WEIGHT, liked_at
        )
    return LikeState(liked=True, like_count=counts[0])


# A like or an unlike is two writes, the like's row and the post's count,
# made together: on SQLite in one transaction, on PostgreSQL in one statement
# (the row's change in a WITH clause), which is its own transaction: one
# round trip instead of four (BEGIN, two statements, COMMIT), and the post's
# row is locked only while that statement runs. Both answer the same, and
# each mode's suite tests its own. When nothing changed (liked already, or
# not liked), the post's counts as the last commit left them: on PostgreSQL
# from the same statement (a locking read, see _or_counts_as_they_are), on
# SQLite read in the transaction.


async def _like_in_transaction(
    services: Services, post_id: str, account_id: str, liked_at: datetime
) -> tuple[bool, tuple[int, int], str]:
    async with services.db.write_session() as session:
        inserted = await _insert_if_absent(
            session,
            Like,
            {"post_id": post_id, "account_id": account_id, "created_at": liked_at},
        )
        counts, author_id = await _add_likes(session, post_id, 1 if inserted else 0)
    return inserted, counts, author_id


def _like_statement() -> Any:
    added = (
        postgresql.insert(_table(Like))
        .values(
            post_id=bindparam("like_post"),
            account_id=bindparam("like_account"),
            created_at=bindparam("like_at", type_=_table(Like).c.created_at.type),
        )
        .on_conflict_do_nothing()
        .returning(Like.post_id)
        .cte("added")
    )
    changed = select(added.c.post_id).exists()
    bumped = (
        update(Post)
        .where(Post.id == bindparam("like_post"), changed)
        .values(like_count=Post.like_count + 1)
        .returning(Post.like_count, Post.comment_count, Post.author_id)
        .cte("bumped")
    )
    return _or_counts_as_they_are(bumped, changed)


def _unlike_statement() -> Any:
    removed = (
        delete(Like)
        .where(
            Like.post_id == bindparam("like_post"),
            Like.account_id == bindparam("like_account"),
        )
        .returning(Like.post_id, Like.created_at)
        .cte("removed")
    )
    bumped = (
        update(Post)
        .where(Post.id == bindparam("like_post"), Post.id == removed.c.post_id)
        .values(like_count=Post.like_count - 1)
        .returning(
            Post.like_count, Post.comment_count, Post.author_id, removed.c.created_at
        )
        .cte("bumped")
    )
    return _or_counts_as_they_are(bumped, select(removed.c.post_id).exists())


def _or_counts_as_they_are(bumped: Any, changed: Any) -> Any:
    """``bumped``'s row (the post's counts and author, and the like's time
    for an unlike) after True when the like's row ``changed``; otherwise the
    post's row as it is, after False: so nothing to change costs no second
    statement. No row: no such post.

    As it is means as the last commit left it, not as the statement's
    snapshot had it: the like's insert (or delete) that found nothing to do
    may have waited for a concurrent request doing the same, whose commit
    the snapshot predates. A locking read (``FOR SHARE``) reads the newest
    committed row, waiting for a writer that holds it, as the update does.
    """
    rest = [column for column in bumped.c if column.key not in _POST_FACTS]
    current = (
        select(*(_table(Post).c[key] for key in _POST_FACTS))
        .where(Post.id == bindparam("like_post"), ~changed)
        .with_for_update(read=True)
        .cte("current")
    )
    return union_all(
        select(true(), *(bumped.c[key] for key in _POST_FACTS), *rest),
        select(false(), *(current.c[key] for key in _POST_FACTS)).add_columns(
            *(null() for _ in rest)
        ),
    )


# What every answer of _LIKE and _UNLIKE starts with, after the flag: the
# post's counts and its author.
_POST_FACTS = ("like_count", "comment_count", "author_id")


# Built once, with named parameters: building a statement and working out
# its cache key (to find its compiled form) cost more CPU than the rest of
# executing it; a statement object keeps its key.
_LIKE = _like_statement()
_UNLIKE = _unlike_statement()


async def _like_in_one_statement(
    services: Services, post_id: str, account_id: str, liked_at: datetime
) -> tuple[bool, tuple[int, int], str]:
    parameters = {"like_post": post_id, "like_account": account_id, "like_at": liked_at}
    row, counts, author_id = await _run_like_statement(
        services, _LIKE, parameters, post_id
    )
    return row is not None, counts, author_id


async def _run_like_statement(
    services: Services, statement: Any, parameters: dict[str, Any], post_id: str
) -> tuple[Sequence[Any] | None, tuple[int, int], str]:
    """Run ``_LIKE`` or ``_UNLIKE``: the row it changed (None when there was
    nothing to change: liked already, or not liked), and the post's counts
    and author either way. A missing post fails the like's foreign key, or
    finds no row to read: 404 both."""
    async with services.db.statement_session() as session:
        connection = await session.connection()
        row = (await connection.execute(statement, parameters)).one_or_none()
    if row is None:
        raise NotFoundError("the post")
    changed, like_count, comment_count, author_id, *rest = row
    counts = (int(like_count), int(comment_count))
    return (tuple(rest) if changed else None), counts, str(author_id)


async def do_unlike(services: Services, post_id: str, account_id: str) -> LikeState:
    _require_id(post_id, "the post")
    keys = counts_key(post_id), liked_key(account_id, post_id)
    marks = await services.cache.mark_for_write(*keys)
    # The like's time comes back with its deletion: trending takes back
    # exactly what the like added.
    if services.db.is_sqlite:
        liked_at, counts, author_id = await _unlike_in_transaction(
            services, post_id, account_id
        )
    else:
        liked_at, counts, author_id = await _unlike_in_one_statement(
            services, post_id, account_id
        )
    if liked_at is not None:
        SOCIAL_WRITES.labels("unlike").inc()
    await _store_like_state(services, marks, post_id, account_id, counts, liked=False)
    if liked_at is not None:
        await trending.record_event(
            services, post_id, author_id, trending.LIKE_WEIGHT, liked_at, undone=True
        )
    return LikeState(liked=False, like_count=counts[0])


async def _unlike_in_transaction(
    services: Services, post_id: str, account_id: str
) -> tuple[datetime | None, tuple[int, int], str]:
    async with services.db.write_session() as session:
        connection = await session.connection()
        liked_at = await connection.scalar(
            delete(Like)
            .where(Like.post_id == post_id, Like.account_id == account_id)
            .returning(Like.created_at)
        )
        counts, author_id = await _add_likes(
            session, post_id, 0 if liked_at is None else -1
        )
    return liked_at, counts, author_id


async def _unlike_in_one_statement(
    services: Services, post_id: str, account_id: str
) -> tuple[datetime | None, tuple[int, int], str]:
    parameters = {"like_post": post_id, "like_account": account_id}
    row, counts, author_id = await _run_like_statement(
        services, _UNLIKE, parameters, post_id
    )
    return (None if row is None else row[0]), counts, author_id  # the like's time


async def _store_like_state(
    services: Services,
    marks: WriteMarks,
    post_id: str,
    account_id: str,
    counts: tuple[int, int],
    *,
    liked: bool,
) -> None:
    """Cache the post's counts and the liker's like as a like or unlike left
    them, in the keys it marked before its transaction (one round trip).

    The counts were read under the post's row lock, held to the commit, so
    they are what the commit left; the cache's marks take care of any write
    that came after (see ``Cache.mark_for_write``). The many feed pages that
    show the post next find both cached, and no row is read again for them.
    """
    await asyncio.gather(
        _store_post_counts(services, marks, post_id, counts),
        services.cache.store_after_write(
            marks,
            {liked_key(account_id, post_id): b"1" if liked else b"0"},
            ttl=POST_TTL,
        ),
    )


async def _store_post_counts(
    services: Services, marks: WriteMarks, post_id: str, counts: tuple[int, int]
) -> None:
    """Cache a post's like and comment counts as a write that marked the
    key left them (read under the post's row lock, so what its commit left)."""
    await services.cache.store_after_write(
        marks, {counts_key(post_id): orjson.dumps(list(counts))}, ttl=COUNTS_TTL
    )


async def _rewarm(services: Services, post_id: str) -> None:
    """Load again the counts of a post that a comment's deletion just
    invalidated.

    The writer pays one primary-key read, so that the many feed pages that
    show the post next find its counts cached. (Likes and comments store
    the counts they know instead: ``_store_like_state``, ``do_comment``.)
    """
    await counts_of(services, [post_id])


async def _require_post(session: AsyncSession, post_id: str) -> str:
    """The author of the post; 404 if there is no such post."""
    author_id = await session.scalar(select(Post.author_id).where(Post.id == post_id))
    if author_id is None:
        raise NotFoundError("the post")
    return author_id


async def _add_likes(
    session: AsyncSession, post_id: str, delta: int
) -> tuple[tuple[int, int], str]:
    """Add ``delta`` to the post's like count; its like and comment counts
    after it, and its author. 404 if there is no such post.

    The update returns them, and is the transaction's last statement: a
    popular post's row stays locked from it to the commit only, one round
    trip, however many likes queue up behind it. Sent on the session's
    connection as it is: a plain update needs none of the ORM's bulk-update
    work (which was a good part of a like's CPU).
    """
    if delta == 0:
        query: Any = select(Post.like_count, Post.comment_count, Post.author_id).where(
            Post.id == post_id
        )
    else:
        query = (
            update(Post)
            .where(Post.id == post_id)
            .values(like_count=Post.like_count + delta)
            .returning(Post.like_count, Post.comment_count, Post.author_id)
        )
    connection = await session.connection()
    row = (await connection.execute(query)).one_or_none()
    if row is None:
        raise NotFoundError("the post")
    return (int(row[0]), int(row[1])), str(row[2])


# --- comments -------------------------------------------------------------------


async def do_comment(
    services: Services, post_id: str, author_id: str, body: str
) -> CommentView:
    _require_id(post_id, "the post")
    comment = Comment(
        id=new_id(),
        post_id=post_id,
        author_id=author_id,
        body=body,
        created_at=utcnow(),
    )
    marks = await services.cache.mark_for_write(counts_key(post_id))
    try:
        if services.db.is_sqlite:
            counts, post_author = await _comment_in_transaction(services, comment)
        else:
            counts, post_author = await _comment_in_one_statement(services, comment)
    except IntegrityError as exc:
        # A foreign key failed: the post's cannot (the comment is inserted
        # only once the post's row is updated), so the commenting account
        # is gone.
        await ensure_account_exists(services, author_id)
        raise NotFoundError("the post") from exc
    SOCIAL_WRITES.labels("comment").inc()
    # The counts are known (see _store_post_counts); the head is not, and a
    # tombstone left after the commit makes its next reader load it again.
    await asyncio.gather(
        _store_post_counts(services, marks, post_id, counts),
        services.cache.invalidate(comments_head_key(post_id)),
    )
    await trending.record_event(
        services, post_id, post_author, trending.COMMENT_WEIGHT, comment.created_at
    )
    views = await _comment_views(services, [comment])
    if not views:
        raise NotFoundError("the account")
    return views[0]


# A comment is two writes, its row and the post's count, made together, as a
# like's are: on SQLite in one transaction, on PostgreSQL in one statement.
# There the post's count is bumped first (a WITH clause) and the comment is
# inserted from what that update returned, so it exists only if the post
# did when its row was locked: a post deleted before (even one whose delete
# committed while the update waited for the row) updates nothing, inserts
# nothing and answers no row, and a delete that comes after waits for the
# statement's commit and then takes the comment with it (cascade). Both
# answer the post's counts as the update left them, read under its row lock.


async def _comment_in_transaction(
    services: Services, comment: Comment
) -> tuple[tuple[int, int], str]:
    async with services.db.write_session() as session:
        connection = await session.connection()
        row = (
            await connection.execute(_BUMP_COMMENTS, {"comment_post": comment.post_id})
        ).one_or_none()
        if row is None:
            raise NotFoundError("the post")
        await connection.execute(
            _table(Comment).insert(),
            {
                "id": comment.id,
                "post_id": comment.post_id,
                "author_id": comment.author_id,
                "body": comment.body,
                "created_at": comment.created_at,
            },
        )
    return (int(row[0]), int(row[1])), str(row[2])


def _bump_comments_statement() -> Any:
    return (
        update(Post)
        .where(Post.id == bindparam("comment_post"))
        .values(comment_count=Post.comment_count + 1)
        .returning(Post.like_count, Post.comment_count, Post.author_id, Post.id)
    )


def _comment_statement() -> Any:
    bumped = _bump_comments_statement().cte("bumped")
    comments = _table(Comment)
    added = insert(comments).from_select(
        ["id", "post_id", "author_id", "body", "created_at"],
        select(
            bindparam("comment_id", type_=comments.c.id.type),
            bumped.c.id,
            bindparam("comment_author", type_=comments.c.author_id.type),
            bindparam("comment_body", type_=comments.c.body.type),
            bindparam("comment_at", type_=comments.c.created_at.type),
        ),
    )
    return select(
        bumped.c.like_count, bumped.c.comment_count, bumped.c.author_id
    ).add_cte(added.cte("added"))


# Built once, as _LIKE is.
_BUMP_COMMENTS = _bump_comments_statement()
_COMMENT = _comment_statement()


async def _comment_in_one_statement(
    services: Services, comment: Comment
) -> tuple[tuple[int, int], str]:
    parameters = {
        "comment_post": comment.post_id,
        "comment_id": comment.id,
        "comment_author": comment.author_id,
        "comment_body": comment.body,
        "comment_at": comment.created_at,
    }
    async with services.db.statement_session() as session:
        connection = await session.connection()
        row = (await connection.execute(_COMMENT, parameters)).one_or_none()
    if row is None:
        raise NotFoundError("the post")
    return (int(row[0]), int(row[1])), str(row[2])


async def do_delete_comment(
    services: Services, comment_id: str, account_id: str
) -> None:
    """Delete a comment; its author and the post's author may."""
    _require_id(comment_id, "the comment")
    async with services.db.write_session() as session:
        found = (
            await session.execute(
                select(
                    Comment.post_id,
                    Comment.author_id,
                    Post.author_id,
                    Comment.created_at,
                )
                .join(Post, Post.id == Comment.post_id)
                .where(Comment.id == comment_id)
                .with_for_update(of=Comment)
            )
        ).one_or_none()
        if found is None:
            raise NotFoundError("the comment")
        post_id, comment_author, post_author, commented_at = found
        if account_id not in (comment_author, post_author):
            raise ForbiddenError(
                "only the comment's author or the post's author may delete it"
            )
        result = await session.execute(delete(Comment).where(Comment.id == comment_id))
        if rowcount(result) != 1:
            # The row was locked above, so not deleted meanwhile; as a post's
            # deletion, only the request that deleted it answers 204.
            raise NotFoundError("the comment")
        await session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(comment_count=Post.comment_count - 1)
        )
    SOCIAL_WRITES.labels("delete_comment").inc()
    await services.cache.invalidate(counts_key(post_id), comments_head_key(post_id))
    await trending.record_event(
        services,
        post_id,
        post_author,
        trending.COMMENT_WEIGHT,
        commented_at,
        undone=True,
    )
    await _rewarm(services, post_id)


async def list_comments(
    services: Services, post_id: str, cursor: str | None, limit: int
) -> WirePage:
    """A post's comments, oldest first, in ``CommentView``'s JSON shape.

    The first page comes from the post's cached head (``_comments_head``);
    a page past it, or larger than it, is one query, and the post's
    existence is asked of the cache (its counts) only when that page is
    empty: comments go with their post.
    """
    _require_id(post_id, "the post")
    scope = f"comments:{post_id}"
    head = await _comments_head(services, post_id) if cursor is None else None
    if head is not None and (len(head.rows) >= limit or not head.more):
        rows, more = head.rows[:limit], len(head.rows) > limit or head.more
    else:
        rows, more = await _comments_after(
            services, post_id, after_id(services, scope, cursor), limit
        )
    authors = await summary_wires(services, [row.author_id for row in rows])
    items = [
        {
            "id": row.id,
            "post_id": post_id,
            "author": authors[row.author_id],
            "body": row.body,
            "created_at": row.created_at,
        }
        for row in rows
        if row.author_id in authors
    ]
    return WirePage(items, next_cursor(services, scope, [row.id for row in rows], more))


class _CommentRow(NamedTuple):
    id: str
    author_id: str
    body: str
    created_at: str  # ISO 8601 UTC, as the API writes it ("Z")


class _CommentsHead(NamedTuple):
    rows: list[_CommentRow]
    more: bool


def _comment_query(post_id: str) -> Select[str, str, str, datetime]:
    return select(
        Comment.id, Comment.author_id, Comment.body, Comment.created_at
    ).where(Comment.post_id == post_id)


async def _comments_head(services: Services, post_id: str) -> _CommentsHead:
    """The post's oldest ``COMMENTS_HEAD_SIZE`` comments and whether more
    exist, from the cache under ``comments-head:{id}``; 404 if there is no
    such post (cached as "not found", like its counts).

    Every write that changes the head invalidates it with the post's counts.
    A comment committed while a reader loads the head is safe: the
    invalidation that follows its commit leaves a tombstone, and the cache
    does not store a load over a key that changed since its miss.
    """

    async def load() -> bytes | None:
        async with services.db.read_session() as session:
            rows = (
                await session.execute(
                    _comment_query(post_id)
                    .order_by(Comment.id)
                    .limit(COMMENTS_HEAD_SIZE + 1)
                )
            ).all()
            if not rows and not await _post_exists(session, post_id):
                return None
        return orjson.dumps(
            {
                "rows": [list(row) for row in rows[:COMMENTS_HEAD_SIZE]],
                "more": len(rows) > COMMENTS_HEAD_SIZE,
            },
            option=orjson.OPT_UTC_Z,
        )

    blob = await services.cache.get_or_load(
        comments_head_key(post_id), load, ttl=COMMENTS_HEAD_TTL
    )
    if blob is None:
        raise NotFoundError("the post")
    head = orjson.loads(blob)
    return _CommentsHead([_CommentRow(*row) for row in head["rows"]], head["more"])


async def _comments_after(
    services: Services, post_id: str, after: str | None, limit: int
) -> tuple[list[_CommentRow], bool]:
    """``limit`` comments of the post past the comment ``after``, from the
    database, and whether more follow; 404 if the post is gone."""
    query = _comment_query(post_id)
    if after is not None:
        query = query.where(Comment.id > after)
    async with services.db.read_session() as session:
        found = (
            await session.execute(query.order_by(Comment.id).limit(limit + 1))
        ).all()
    if not found and not await counts_of(services, [post_id]):
        raise NotFoundError("the post")
    rows = [
        _CommentRow(row.id, row.author_id, row.body, _utc_z(row.created_at))
        for row in found[:limit]
    ]
    return rows, len(found) > limit


def _utc_z(value: datetime) -> str:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()[1:-1]


async def _post_exists(session: AsyncSession, post_id: str) -> bool:
    return await session.scalar(select(Post.id).where(Post.id == post_id)) is not None


async def _comment_views(
    services: Services, comments: Sequence[Comment]
) -> list[CommentView]:
    summaries = await get_summaries(services, [c.author_id for c in comments])
    return [
        CommentView(
            id=c.id,
            post_id=c.post_id,
            author=summaries[c.author_id],
            body=c.body,
            created_at=c.created_at,
        )
        for c in comments
        if c.author_id in summaries
    ]


# --- feeds ----------------------------------------------------------------------


async def home_feed(
    services: Services, account_id: str, cursor: str | None, limit: int
) -> WirePage:
    """Posts of the accounts ``account_id`` follows, and its own, newest first.

    Served from fanned-out timelines; see :mod:`petpal.social.home`.
    """
    return await home.home_page(services, account_id, cursor, limit)


async def public_feed(
    services: Services, viewer_id: str | None, cursor: str | None, limit: int
) -> WirePage:
    """Everybody's posts, newest first; see :mod:`petpal.social.feeds`."""
    return await feeds.public_page(services, viewer_id, cursor, limit)


async def account_posts(
    services: Services,
    username: str,
    viewer_id: str | None,
    cursor: str | None,
    limit: int,
) -> WirePage:
    account_id = await resolve_username(services, username)
    return await feeds.account_page(services, account_id, viewer_id, cursor, limit)


def lookup_tag(raw: str) -> str | None:
    """The canonical form of the hashtag ``raw`` (with or without '#'), if valid."""
    if len(raw) > 8 * TAG_MAX_LENGTH:
        # No tag once normalised; and normalising a long run of combining
        # marks takes time in the square of its length (found by a trial).
        return None
    text = unicodedata.normalize("NFC", "#" + raw.removeprefix("#"))
    if HASHTAG_PATTERN.fullmatch(text) is None:
        return None
    tags = extract_hashtags(text)
    return tags[0] if tags and len(tags[0]) <= TAG_MAX_LENGTH else None


async def tag_feed(
    services: Services,
    raw_tag: str,
    viewer_id: str | None,
    cursor: str | None,
    limit: int,
) -> WirePage:
    tag = lookup_tag(raw_tag)
    if tag is None:
        raise NotFoundError("the hashtag")
    return await feeds.tag_page(services, tag, viewer_id, cursor, limit)


# --- used by other services -----------------------------------------------------


async def account_counts(services: Services, account_id: str) -> tuple[int, int, int]:
    """Followers, following and posts of ``account_id``, from the cache."""

    async def load() -> bytes:
        async with services.db.read_session() as session:
            row = (
                await session.execute(
                    select(
                        AccountStats.follower_count,
                        AccountStats.following_count,
                        AccountStats.post_count,
                    ).where(AccountStats.account_id == account_id)
                )
            ).one_or_none()
        return orjson.dumps(list(row) if row is not None else [0, 0, 0])

    blob = await services.cache.get_or_load(
        _counts_key(account_id), load, ttl=COUNTS_TTL
    )
    followers, following, posts = orjson.loads(blob) if blob else (0, 0, 0)
    return int(followers), int(following), int(posts)


def _following_key(account_id: str) -> str:
    return f"following:{account_id}"


# Above this many followees the id set is not cached (it would be a large
# value read whole for one membership test); such accounts query instead.
FOLLOWING_SET_MAX = 5000
_TOO_MANY = b"many"


async def _cached_followees(services: Services, follower_id: str) -> set[str] | None:
    """The ids ``follower_id`` follows, from the cache; None if too many to cache."""

    async def load() -> bytes:
        async with services.db.read_session() as session:
            ids = (
                await session.scalars(
                    select(Follow.followee_id)
                    .where(Follow.follower_id == follower_id)
                    .limit(FOLLOWING_SET_MAX + 1)
                )
            ).all()
        return _TOO_MANY if len(ids) > FOLLOWING_SET_MAX else orjson.dumps(ids)

    blob = await services.cache.get_or_load(
        _following_key(follower_id), load, ttl=COUNTS_TTL
    )
    if blob is None or blob == _TOO_MANY:
        return None
    return set(orjson.loads(blob))


async def is_following(services: Services, follower_id: str, followee_id: str) -> bool:
    followees = await _cached_followees(services, follower_id)
    if followees is not None:
        return followee_id in followees
    async with services.db.read_session() as session:
        found = await session.scalar(
            select(Follow.id).where(
                Follow.follower_id == follower_id, Follow.followee_id == followee_id
            )
        )
    return found is not None


# --- repair ---------------------------------------------------------------------


async def do_recount(
    services: Services, account_ids: Sequence[str], post_ids: Sequence[str]
) -> None:
    """Recompute the counters of the given accounts and posts from their rows.

    The counters stay exact under concurrent social writes by construction;
    this repairs them after rows vanished by a cascade from outside, e.g. an
    account deleted with its likes, comments and follows. With posts, the
    trending ranking is rebuilt too, without the vanished events.
    """
    async with services.db.write_session() as session:
        await recount_in(session, account_ids, post_ids)
    await do_drop_recounted(services, account_ids, post_ids)


RECOUNT_JOB = "social.recount"
# Ids a recount job carries: an account followed by a few percent of everyone
# leaves tens of thousands of counts to redo, in jobs of this many.
RECOUNT_CHUNK = 1000


@on_account_deletion
async def delete_social_of(session: AsyncSession, account_id: str) -> list[str]:
    """What an account's deletion does here: its posts go first, and the
    counts of what the cascade removes are recounted by jobs.

    Its posts are deleted before the account: the cascade from the account
    reached a photo's row before the post's link to it, which PostgreSQL
    refused (found by a trial). Recounted: the accounts it followed or was
    followed by, and the posts it liked or commented on; its own posts are
    named too, so that the trending ranking is rebuilt without them. Its
    posts leave the timelines as pages meet them (``feeds``).
    """

    async def ids(query: Select[str]) -> set[str]:
        return set((await session.scalars(query)).all())

    own = await ids(select(Post.id).where(Post.author_id == account_id))
    posts = own | await ids(select(Like.post_id).where(Like.account_id == account_id))
    posts |= await ids(select(Comment.post_id).where(Comment.author_id == account_id))
    accounts = await ids(
        select(Follow.followee_id).where(Follow.follower_id == account_id)
    )
    accounts |= await ids(
        select(Follow.follower_id).where(Follow.followee_id == account_id)
    )
    accounts.discard(account_id)
    if own:
        await session.execute(delete(Post).where(Post.author_id == account_id))
    enqueue_chunked(
        session,
        RECOUNT_JOB,
        "account_ids",
        sorted(accounts),
        RECOUNT_CHUNK,
        post_ids=[],
    )
    enqueue_chunked(
        session, RECOUNT_JOB, "post_ids", sorted(posts), RECOUNT_CHUNK, account_ids=[]
    )
    return [post_key(post_id) for post_id in sorted(own)] + [_counts_key(account_id)]


async def do_drop_recounted(
    services: Services, account_ids: Sequence[str], post_ids: Sequence[str]
) -> None:
    """Drop what was derived from the counters and rows a recount corrected:
    the cached counts, the posts' cached first comments and, with posts, the
    trending ranking (their likes and comments that vanished still count
    there)."""
    await services.cache.invalidate(
        *(_counts_key(a) for a in account_ids),
        *(counts_key(p) for p in post_ids),
        *(comments_head_key(p) for p in post_ids),
    )
    if post_ids:
        await trending.forget_ranking(services)


async def recount_in(
    session: AsyncSession, account_ids: Sequence[str], post_ids: Sequence[str]
) -> None:
    """:func:`do_recount`'s writes, in ``session``; then
    :func:`do_drop_recounted`, after the commit."""

    def count(model: type[Base], condition: ColumnElement[bool]) -> Any:
        return (
            select(func.count()).select_from(model).where(condition).scalar_subquery()
        )

    if post_ids:
        await session.execute(
            update(Post)
            .where(Post.id.in_(list(post_ids)))
            .values(
                like_count=count(Like, Like.post_id == Post.id),
                comment_count=count(Comment, Comment.post_id == Post.id),
            )
        )
    for account_id in account_ids:
        await _ensure_stats(session, account_id)
        await session.execute(
            update(AccountStats)
            .where(AccountStats.account_id == account_id)
            .values(
                follower_count=count(Follow, Follow.followee_id == account_id),
                following_count=count(Follow, Follow.follower_id == account_id),
                post_count=count(Post, Post.author_id == account_id),
            )
        )
