"""Time-ordered identifiers.

Ids are ULIDs (48-bit millisecond time, 80 random bits, 26 Crockford base32
characters), so they sort like the rows they name and a cursor can page by id
alone. Within one process they are also strictly increasing: two ids made in
the same millisecond still sort in the order they were made.
"""

from __future__ import annotations

import re
import threading
from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from ulid import ULID

_lock = threading.Lock()
_last = 0
_MAX = (1 << 128) - 1


def new_id() -> str:
    global _last
    with _lock:
        candidate = int(ULID())
        if candidate <= _last:
            candidate = min(_last + 1, _MAX)
        _last = candidate
        return str(ULID.from_int(candidate))


# What ``ULID.from_str`` takes, as one match instead of a decode (the decode
# was 3% of a home feed's CPU): 26 Crockford base32 digits, either case,
# the first at most 7 so that the value fits in 128 bits.
_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def canonical_id(value: str) -> str:
    """``value`` as ids are stored, if it is one: upper case.

    A ULID's letters are case-insensitive (its specification: Crockford's
    base32), so ``01j…`` names the post ``01J…`` names; a lower-case id was
    a 404 (found by a trial). Anything else is left as it is, for the
    caller's own answer to a malformed id (a 404 or a 422).
    """
    return value.upper() if is_valid_id(value) else value


# An id a client sends, in a path or a body: compared as stored.
GivenId = Annotated[str, AfterValidator(canonical_id)]

# An id of another service's object in a body (a photo, a pet): generous
# for a 26-character ULID, so that the owning service says why an id is bad
# (``invalid_media``, ``invalid_pet``), whichever route it is sent to (found
# by a trial: 27 characters were ``validation_failed`` as an avatar and
# ``invalid_media`` in a post).
ForeignId = Annotated[GivenId, StringConstraints(min_length=1, max_length=64)]
