"""What the data migrations that find a caption's hashtags or mentions
again share: each picks the captions its rules changed, and these store
what the app's own extraction finds in them now.

They call the app's extraction rather than a copy of it: what a migration
must leave is what the app finds in the caption, and a later change of the
rules brings a migration of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from petpal.platform.text import extract_hashtags, extract_mentions

# As the app refuses a caption with a longer tag, one found longer here
# leaves its post's tags as they were.
_TAG_MAX_LENGTH = 100

Captions = Sequence[tuple[str, str]]  # (post id, caption)


def find_tags_again(bind: Connection, posts: Captions) -> bool:
    """Store the hashtags the app finds in each caption; True if any changed."""
    changed = False
    for post_id, caption in posts:
        tags = extract_hashtags(caption)
        if any(len(tag) > _TAG_MAX_LENGTH for tag in tags):
            continue
        changed = _link(bind, "post_tags", "tag", post_id, tags) or changed
    return changed


def find_mentions_again(bind: Connection, posts: Captions) -> bool:
    """Store the mentions the app finds in each caption, among the accounts
    that exist now; True if any changed."""
    changed = False
    for post_id, caption in posts:
        names = extract_mentions(caption)
        found: dict[str, str] = {}
        if names:
            found = dict(
                bind.execute(
                    sa.text(
                        "SELECT username_canonical, id FROM accounts"
                        " WHERE username_canonical IN :names"
                    ).bindparams(sa.bindparam("names", expanding=True)),
                    {"names": names},
                ).all()
            )
        mentioned = [found[name] for name in names if name in found]
        changed = (
            _link(bind, "post_mentions", "account_id", post_id, mentioned) or changed
        )
    return changed


def _link(
    bind: Connection, table: str, column: str, post_id: str, values: list[str]
) -> bool:
    """Make ``values`` the post's rows of ``table`` in order; True if they
    were not. The table and column are this module's own names."""
    stored = bind.execute(
        sa.text(
            f"SELECT {column} FROM {table} WHERE post_id = :id"  # noqa: S608
            " ORDER BY position"
        ),
        {"id": post_id},
    ).scalars()
    if list(stored) == values:
        return False
    bind.execute(
        sa.text(f"DELETE FROM {table} WHERE post_id = :id"),  # noqa: S608
        {"id": post_id},
    )
    if values:
        bind.execute(
            sa.text(
                f"INSERT INTO {table} ({column}, post_id, position)"  # noqa: S608
                " VALUES (:value, :id, :position)"
            ),
            [{"value": v, "id": post_id, "position": i} for i, v in enumerate(values)],
        )
    return True


def captions_holding(bind: Connection, pieces: Sequence[str]) -> list[tuple[str, str]]:
    """Every post whose caption holds one of ``pieces`` (LIKE patterns, so
    ``%`` in one is anything), with its caption."""
    holds = " OR ".join(f"caption LIKE :c{i}" for i in range(len(pieces)))
    return [
        (post_id, caption)
        for post_id, caption in bind.execute(
            sa.text(f"SELECT id, caption FROM posts WHERE {holds}"),  # noqa: S608
            {f"c{i}": f"%{piece}%" for i, piece in enumerate(pieces)},
        )
    ]
