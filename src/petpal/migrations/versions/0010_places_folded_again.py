"""Pets' places folded again: Cyrillic letters of their own, invisible characters

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 13:00:00.000000

0009's fold dropped every mark of the Combining Diacritical Marks block,
so й was searched as и, ї as і, ў as у and Macedonian's ѓ and ќ as г and
к; Hebrew points and Arabic vowel marks stayed; a soft hyphen or a
zero-width space pasted inside a place hid it from a search, as a
non-breaking hyphen did from one typed with a hyphen-minus. The fold
(``petpal.platform.text.fold_location``) now keeps those letters, drops
those marks and the characters that show nothing, and reads every dash as
a hyphen-minus; each stored place is folded again here by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from petpal.migrations.places import fold_places_again
from petpal.platform.text import fold_location

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if fold_places_again(op.get_bind(), fold_location):
        # Cached adoption pages were found by the old forms: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # 0009's fold differs from this one only where it found the wrong
    # places or none; the places themselves are kept as typed.
    pass
