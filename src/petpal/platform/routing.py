"""Route lookup by path segments, in front of the app's router.

Starlette and FastAPI find a request's route by trying every route's regular
expression in turn. With the forty routes of the API that scan was a quarter
of the CPU of a request that did nothing (docs/benchmarks.md), and it grows
with every route added. :class:`RouteIndex` tries only the routes that can
match: those whose literal start (the path up to the first parameter) is a
start of the request's path, found by walking a tree of path segments. They
are tried in declaration order with their own ``matches``, so the route
chosen and its path parameters are exactly the router's. Three answers differ
from the router's, the first two as RFC 9110 asks:

- A HEAD is served by the route that would serve a GET, and the server
  sends that answer's headers without its content (section 9.3.2: every
  general-purpose server supports GET and HEAD). FastAPI's routes take only
  the methods they declare, so the router answers HEAD with 405.
- A known path asked with a method none of its routes takes is a 405 whose
  ``Allow`` names every method the path takes, HEAD wherever GET; the
  router's names only those of the first route of the path.
- A path that a route names whole, with no parameter (``/pets/of-the-day``),
  is that route's alone: a route with a parameter in its place
  (``/pets/{pet_id}``) never takes it, whichever was declared first. The
  router tried it for the methods the literal route does not take, so a
  ``DELETE`` of Pet of the Day was a 404 "the pet was not found", and its
  405 listed the other route's methods (found by a trial).

A path with an encoded slash (``%2F``) is a 404: the server decodes it
into a separator, and the router would match the path it was not. A query
naming one of the route's own parameters twice (``?limit=5&limit=50``)
is a 422: FastAPI would take the last and drop the other unsaid, and no
route here takes a list in its query; so is one whose %-escapes are no
UTF-8 text, which Starlette would read as U+FFFD. Parameters a route does
not take are ignored, repeated or not, as they are once.

Everything else goes to the router itself, unchanged: a path no route
matches (its 404; the app makes no redirects to the path with or without
a trailing slash), any scope but HTTP, a request behind a ``root_path``,
and requests traced by FastAPI's own telemetry, whose span names the route
the router selected. Those two also get the router's answers above: a
HEAD there is a 405, as it is in FastAPI itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import parse_qsl

from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    # (declaration order, route) of the routes whose literal start ends here.
    routes: list[tuple[int, BaseRoute]] = field(default_factory=list)


def _literal_segments(path_format: str) -> list[str]:
    """The whole segments before the first parameter: ``/a/{b}/c`` → ``a``."""
    literal = path_format.split("{", 1)[0]
    segments = literal.split("/")[1:]
    if "{" in path_format:
        segments = segments[:-1]  # the segment the parameter starts in
    return segments


class RouteIndex:
    """The app router's dispatch, trying only the routes a path can match.

    Installed as the router's ``middleware_stack``, the ASGI app that
    ``Router.__call__`` runs, so it sits inside the exception handlers and
    FastAPI's exit stack exactly where the router's own dispatch did.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.fallback = router.app
        self._indexed: list[BaseRoute] = []
        self._root = _Node()
        # By the route's id (routes are not hashable); made anew with the tree.
        self._query_names: dict[int, frozenset[str]] = {}
        # The routes of each path named whole, without a parameter.
        self._literal: dict[str, list[BaseRoute]] = {}
        self._build()

    def _build(self) -> None:
        self._query_names = {}
        self._literal = {}
        root = _Node()
        literal: dict[str, list[BaseRoute]] = {}
        for order, route in enumerate(self.router.routes):
            path_format = getattr(route, "path_format", None)
            if not isinstance(path_format, str) or not path_format.startswith("/"):
                # A route without a path template (a Mount's is one, but a
                # Host has none) could match anything: serve nothing from
                # the index, so the router decides every request.
                self._indexed, self._root = list(self.router.routes), _Node()
                return
            node = root
            for segment in _literal_segments(path_format):
                node = node.children.setdefault(segment, _Node())
            node.routes.append((order, route))
            if isinstance(route, Route) and "{" not in path_format:
                literal.setdefault(path_format, []).append(route)
        self._indexed, self._root = list(self.router.routes), root
        self._literal = literal

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes that can match ``path``, in declaration order."""
        found: list[tuple[int, BaseRoute]] = []
        node = self._root
        found += node.routes
        for segment in path.split("/")[1:]:
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            found += node.routes
        found.sort(key=lambda entry: entry[0])
        return [route for _, route in found]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"%2f" in scope.get("raw_path", b"").lower():
            # An encoded slash is a character of its segment, which no path
            # parameter here takes (ids, usernames, tags and file names have
            # none); the server decodes it into a real one, and
            # ``/accounts/a%2Ffollow`` reached the follow route (found by a
            # trial). The path names nothing.
            raise HTTPException(404)
        if (
            scope["type"] != "http"
            or scope.get("root_path")
            or "fastapi.telemetry" in scope
        ):
            await self.fallback(scope, receive, send)
            return
        if len(self._indexed) != len(self.router.routes):
            self._build()  # a route was added after the app was made
        chosen: tuple[BaseRoute, Scope] | None = None
        allowed: set[str] = set()  # the methods of the routes matched in part
        head = scope["method"] == "HEAD"
        as_get = False  # a HEAD served by the GET route
        path = scope["path"]
        for route in self._literal.get(path) or self.candidates(path):
            match, child_scope = route.matches(scope)
            methods = getattr(route, "methods", None) or set()
            if match is Match.PARTIAL and head and "GET" in methods:
                match, as_get = Match.FULL, True
            if match is Match.FULL:
                chosen, allowed = (route, child_scope), set()
                break
            if match is Match.PARTIAL:
                allowed |= methods
                if chosen is None:
                    chosen = (route, child_scope)  # unless one matches fully
        if chosen is None:
            await self.fallback(scope, receive, send)
            return
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        route, child_scope = chosen
        query = scope.get("query_string", b"")
        if b"&" in query or b"%" in query:
            names = self._query_names.get(id(route))
            if names is None:
                names = self._query_names[id(route)] = _query_names(route)
            if names:
                _check_parameters(query, names)
        if "router" not in scope:
            scope["router"] = self.router
        scope.update(child_scope)
        if as_get and isinstance(route, Route):
            # The route's own app, past ``handle``'s method check; the scope
            # still says HEAD, so the server sends the headers alone.
            await route.app(scope, receive, send)
            return
        await route.handle(scope, receive, send)


def _query_names(route: BaseRoute) -> frozenset[str]:
    """The query parameters ``route`` reads, its dependencies' included."""
    names: set[str] = set()
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if isinstance(dependant, Dependant) else []
    while pending:
        current = pending.pop()
        names.update(param.alias for param in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


def _check_parameters(query: bytes, names: frozenset[str]) -> None:
    """Refuse a parameter of the route's (``names``) given twice, or whose
    %-escapes decode to no UTF-8 text: Starlette put U+FFFD in its place,
    and ``?location=%ff`` searched for that (found by a trial)."""
    given: set[str] = set()
    # Decoded as Starlette decodes it, so ``l%69mit`` is ``limit``; bytes
    # that are no UTF-8 become lone surrogates, which no text has.
    pairs = parse_qsl(
        query.decode("latin-1"), keep_blank_values=True, errors="surrogateescape"
    )
    for name, value in pairs:
        if name not in names:
            continue
        if name in given:
            _refuse(name, "repeated_parameter", "given more than once: give it once")
        if _UNDECODED.search(value):
            _refuse(name, "invalid_text", "its %-escapes are not UTF-8 text")
        given.add(name)


# What surrogateescape leaves of a byte that is no UTF-8.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _refuse(name: str, kind: str, message: str) -> NoReturn:
    raise RequestValidationError(
        [{"type": kind, "loc": ("query", name), "msg": message}]
    )


def index_routes(router: Router) -> None:
    """Dispatch ``router``'s requests through a :class:`RouteIndex`."""
    if router.middleware_stack != router.app or getattr(router, "form_limits", None):
        # Its own middleware, or form limits that FastAPI's dispatch applies
        # to the scope: the index would skip them.
        raise RuntimeError("this router's dispatch does more than match routes")
    router.middleware_stack = RouteIndex(router)
