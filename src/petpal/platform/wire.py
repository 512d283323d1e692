"""Responses rendered straight to JSON, for the hottest reads.

A route normally returns a pydantic model, which FastAPI validates and
serializes again on the way out. The reads that every page makes (post
pages, posts, comment pages, profiles, an account's pets) are built instead
as plain dicts and lists in their response model's exact JSON shape, with
parts already cached as JSON embedded as they are (``orjson.Fragment``), and
rendered once by orjson. Their routes still declare the response model, so
the OpenAPI schema says what they return, and the tests check each such
answer against it (tests/social/test_wire_shapes.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from starlette.responses import Response

# A value already in its JSON answer's shape: what goes on the wire as it is.
Wire = dict[str, Any]


class WirePage(NamedTuple):
    """A list page (``Page[...]``'s shape) whose items are already wire dicts."""

    items: Sequence[Wire]
    next_cursor: str | None


def json_response(content: object, status_code: int = 200) -> Response:
    """``content`` (wire dicts, lists, fragments) as an ``application/json`` answer.

    Datetimes (always aware UTC here) are written as pydantic writes them,
    with ``Z``.
    """
    return Response(
        orjson.dumps(content, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type="application/json",
    )


def page_response(page: WirePage) -> Response:
    return json_response({"items": page.items, "next_cursor": page.next_cursor})


def utc_text(stored: str) -> str:
    """A cached ISO 8601 UTC time as the API writes it (``Z``, as pydantic does).

    Values cached by orjson end in ``+00:00``; the API's own models write
    ``Z``, and both forms of the same answer must read the same.
    """
    return stored[:-6] + "Z" if stored.endswith("+00:00") else stored
