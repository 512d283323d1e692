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

from alembic import context, op

from petpal.migrations.places import fold_places_again
from petpal.platform.text import fold, fold_location

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _folded(fold_location)


def downgrade() -> None:
    # The fold before this revision: the accents kept.
    _folded(lambda place: unicodedata.normalize("NFKC", fold(place)))


def _folded(rule: Callable[[str], str]) -> None:
    if fold_places_again(op.get_bind(), rule):
        # Cached adoption pages were found by the old forms: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True
