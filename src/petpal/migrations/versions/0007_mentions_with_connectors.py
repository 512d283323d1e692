"""Mentions found again in captions with connectors

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:20:00.000000

A mention ended at a connector other than the underscore, so
``@ｕｓｅｒ＿１`` (typed in full width, where the full-width low line is the
underscore) mentioned the account ``user`` rather than ``user_1``; and a
connector before an ``@`` (``x‿@lena``) did not keep it from being read as
a mention. Captions are kept as typed, so the mentions of each caption that
holds a connector are found again here, with the app's own extraction (as
0006 does for tags), among the accounts that exist now.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from petpal.platform.text import extract_mentions

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The connector punctuation but the underscore.
_CONNECTORS = "\u203f\u2040\u2054\ufe33\ufe34\ufe4d\ufe4e\ufe4f\uff3f"


def upgrade() -> None:
    bind = op.get_bind()
    holds = " OR ".join(f"caption LIKE :c{i}" for i in range(len(_CONNECTORS)))
    posts = bind.execute(
        sa.text(f"SELECT id, caption FROM posts WHERE {holds}"),  # noqa: S608
        {f"c{i}": f"%{ch}%" for i, ch in enumerate(_CONNECTORS)},
    ).all()
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
        stored = bind.execute(
            sa.text(
                "SELECT account_id FROM post_mentions WHERE post_id = :id"
                " ORDER BY position"
            ),
            {"id": post_id},
        ).scalars()
        if list(stored) == mentioned:
            continue
        bind.execute(
            sa.text("DELETE FROM post_mentions WHERE post_id = :id"), {"id": post_id}
        )
        if mentioned:
            bind.execute(
                sa.text(
                    "INSERT INTO post_mentions (post_id, account_id, position)"
                    " VALUES (:id, :account, :position)"
                ),
                [
                    {"id": post_id, "account": account, "position": i}
                    for i, account in enumerate(mentioned)
                ],
            )
        changed = True
    if changed:
        # Cached posts hold the old mentions: the migration's caller clears
        # the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # The mentions as the old rules found them are not kept; the new ones
    # are what the captions say.
    pass
