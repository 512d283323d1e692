"""Pets' places folded again, without their accents

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:30:00.000000

The adoption search matched places by case only: ``malmo`` did not find
Malmö, nor ``tromso`` Tromsø. Places are now folded without accents
(``petpal.platform.text.fold_location``), so each stored place is folded
again here, by the app's own rule: what the search compares with must be
what the app makes of a place now, and a later change of the rule brings a
migration of its own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import context, op

from petpal.platform.text import fold, fold_location

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Pets are read this many at a time, in the order of their ids, so a large
# table is never held in memory at once.
_BATCH = 10_000


def upgrade() -> None:
    _fold_places_again(fold_location)


def downgrade() -> None:
    # The fold before this revision: the accents kept.
    _fold_places_again(lambda place: unicodedata.normalize("NFKC", fold(place)))


def _fold_places_again(rule: Callable[[str], str]) -> None:
    bind = op.get_bind()
    changed = False
    after = ""
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, location, location_folded FROM pets"
                " WHERE id > :after AND location <> '' ORDER BY id LIMIT :batch"
            ),
            {"after": after, "batch": _BATCH},
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        refolded = [
            {"id": pet_id, "folded": folded}
            for pet_id, location, stored in rows
            if (folded := rule(location)) != stored
        ]
        if refolded:
            bind.execute(
                sa.text("UPDATE pets SET location_folded = :folded WHERE id = :id"),
                refolded,
            )
            changed = True
    if changed:
        # Cached adoption pages were found by the old forms: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True
