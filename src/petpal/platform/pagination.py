"""Opaque, signed cursors and the list envelope every list route returns.

A cursor is the sort key of the last item of a page, serialized, signed with
the app's secret and base64url-encoded. Clients must treat it as opaque (its
content may change between releases) and cannot forge it: a cursor that does
not verify is a 400, never a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from petpal.platform.errors import ProblemError
from petpal.platform.security import sign, signature_matches

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_SIG_BYTES = 16


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class InvalidCursorError(ProblemError):
    def __init__(self) -> None:
        super().__init__(
            400,
            "invalid_cursor",
            "the cursor is malformed, expired or not for this list",
        )


def encode_cursor(secret: str, scope: str, key: dict[str, Any]) -> str:
    body = orjson.dumps({"s": scope, "k": key})
    raw = sign(secret, body) + body
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(secret: str, scope: str, cursor: str) -> dict[str, Any]:
    """The key stored in ``cursor``; ``scope`` names the list it belongs to."""
    if len(cursor) > 1024:
        raise InvalidCursorError()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError() from exc
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != cursor:
        # The decoder takes more than one spelling of the same bytes: with
        # padding, other bits after the last byte, characters it skips.
        # Only the one we wrote is the cursor (found by a trial: edited
        # ones gave the page, where an edited cursor is a 400).
        raise InvalidCursorError()
    signature, body = raw[:_SIG_BYTES], raw[_SIG_BYTES:]
    if len(signature) != _SIG_BYTES or not signature_matches(secret, body, signature):
        raise InvalidCursorError()
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidCursorError() from exc
    if not isinstance(decoded, dict) or decoded.get("s") != scope:
        raise InvalidCursorError()
    key = decoded.get("k")
    if not isinstance(key, dict):
        raise InvalidCursorError()
    return key
