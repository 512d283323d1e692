"""What the data migrations that fold pets' places again share: every
stored place is folded again by a rule, the app's own where the migration
brings the app's rule in.

They call the app's fold rather than a copy of it: what a migration must
leave is what the search compares with now, and a later change of the rule
brings a migration of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Pets are read this many at a time, in the order of their ids, so a large
# table is never held in memory at once.
_BATCH = 10_000


def fold_places_again(bind: Connection, rule: Callable[[str], str]) -> bool:
    """Store each pet's place as ``rule`` folds it; True if any changed."""
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
            return changed
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
