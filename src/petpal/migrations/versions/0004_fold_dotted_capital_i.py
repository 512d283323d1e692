"""Hashtags and pets' folded locations with İ folded as i

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 01:00:00.000000

Case-folding spells ``İ`` as ``i`` with a combining dot above; the fold now
drops that dot (``petpal.platform.text.fold``), so ``#İstanbul`` is
``#istanbul``. The stored forms are folded again here. The rule is written
out rather than imported: a migration must do tomorrow what it did today.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOTTED_I = "i\u0307"
WITH_DOTTED_I = f"%{DOTTED_I}%"

# A post that has both spellings (``#İstanbul #istanbul``) keeps one row,
# where the first of the two stood in its caption.
_MERGE_TAG = (
    """
    UPDATE post_tags SET position = (
        SELECT o.position FROM post_tags AS o
        WHERE o.tag = :old AND o.post_id = post_tags.post_id
    )
    WHERE tag = :new AND EXISTS (
        SELECT 1 FROM post_tags AS o
        WHERE o.tag = :old AND o.post_id = post_tags.post_id
        AND o.position < post_tags.position
    )
    """,
    """
    DELETE FROM post_tags
    WHERE tag = :old AND EXISTS (
        SELECT 1 FROM post_tags AS n
        WHERE n.tag = :new AND n.post_id = post_tags.post_id
    )
    """,
    "UPDATE post_tags SET tag = :new WHERE tag = :old",
)


def upgrade() -> None:
    bind = op.get_bind()
    tags = bind.execute(
        sa.text("SELECT DISTINCT tag FROM post_tags WHERE tag LIKE :dotted"),
        {"dotted": WITH_DOTTED_I},
    ).scalars()
    changed = list(tags)
    for old in changed:
        names = {"old": old, "new": old.replace(DOTTED_I, "i")}
        for statement in _MERGE_TAG:
            bind.execute(sa.text(statement), names)
    pets = bind.execute(
        sa.text(
            "SELECT id, location_folded FROM pets WHERE location_folded LIKE :dotted"
        ),
        {"dotted": WITH_DOTTED_I},
    ).all()
    if pets:
        bind.execute(
            sa.text("UPDATE pets SET location_folded = :folded WHERE id = :id"),
            [{"id": i, "folded": f.replace(DOTTED_I, "i")} for i, f in pets],
        )
    if changed or pets:
        # Cached posts, pets and tag timelines hold the old forms: the
        # migration's caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # Nothing to undo: the old fold found the same rows under the dotted
    # spelling only, and which rows had it is not kept.
    pass
