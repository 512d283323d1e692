"""Request bodies read as JSON is defined (RFC 8259), not as Python reads it.

Starlette parses a JSON body with ``json.loads`` on its bytes, which also
takes what is not JSON: the constants ``NaN``, ``Infinity`` and
``-Infinity``, and bodies in UTF-16 or UTF-32. Found by a trial:
``{"caption": NaN}`` was a 422 about a caption that was not a string, where
the body was not JSON at all. Every API route with a body reads it through
:class:`JSONRequest`: UTF-8 only (section 8.1), a leading byte order mark
ignored as the RFC allows, no constants, and no number too large for a
double (which Python reads as infinity). What it refuses reaches the
client as our 400 ``malformed_json`` (``errors``), with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _finite(text: str) -> float:
    # 1e999 is a JSON number, but no double holds it: Python reads infinity.
    value = float(text)
    if math.isinf(value):
        raise json.JSONDecodeError(f"{text} is too large a number", text, 0)
    return value


class JSONRequest(Request):
    """A request whose ``json()`` accepts only JSON."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # Not UTF-8: a UnicodeDecodeError, which FastAPI raises as a
            # 400 from it and ``errors`` words as such.
            text = (await self.body()).decode("utf-8").removeprefix("\ufeff")
            self._json = json.loads(
                text, parse_constant=_refuse_constant, parse_float=_finite
            )
        return self._json


class JSONRoute(APIRoute):
    """An API route whose endpoint and dependencies see a :class:`JSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_request(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return with_json_request
