"""Logs, metrics and the request edge.

Every request gets an id (from ``X-Request-ID`` when a proxy set one), bound
into the structlog context so each log line of that request carries it. The
middleware records the latency histogram per route template and status, and
how many SQL statements the request sent.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import Histogram
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from petpal.platform.db import queries_in_scope
from petpal.platform.errors import (
    INTERNAL_ERROR_DETAIL,
    PROBLEM_MEDIA_TYPE,
    problem_document,
)

log = structlog.get_logger(__name__)

REQUEST_SECONDS = Histogram(
    "petpal_http_request_duration_seconds",
    "Time from request start to the end of the response, by route and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_QUERIES = Histogram(
    "petpal_http_request_db_queries",
    "SQL statements sent while serving one request, by route",
    ["route"],
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50),
)


def configure_logging(
    level: str = "INFO", json: bool = False, *, libraries: bool = False
) -> None:
    """Our events at ``level``, rendered as JSON or for the console.

    With ``libraries`` (the processes ``petpal`` runs, not the tests' apps),
    the standard library's log records too: those of uvicorn, Celery,
    python-multipart and the rest went to stderr as bare lines (a trial
    saw ``Expected boundary character 45, got 103 at index 2`` for a
    malformed upload), with no time, no level and, in JSON mode, no JSON.
    They are now rendered as our events are, on the same stream, with the
    logger's name, from level WARNING up as before (in ``petpal worker``,
    Celery sets the root logger to the worker's level, and its own records
    of each task come out too).
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        cache_logger_on_first_use=True,
    )
    if libraries:
        _route_library_logs(shared, renderer)


class _LibraryLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is when a record comes, as structlog's
    own logger does."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def _route_library_logs(shared: list[Any], renderer: Any) -> None:
    handler = _LibraryLogHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    # Configured again (each server process does), it replaces its own.
    for old in [h for h in root.handlers if isinstance(h, _LibraryLogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Uvicorn gives its loggers handlers of their own: through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def raw_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), without a Request.

    A Starlette ``Request`` and its header map cost more than reading the
    one header a middleware or dependency needs from the ASGI scope.
    """
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def route_template(scope: Scope) -> str:
    """The matched route as a template, e.g. ``/api/v1/posts/{post_id}``.

    The route's own ``path_format``: every route is a route of the app itself
    (``app._add_routes``), so its template carries the API prefix. Unmatched
    paths share one label, so a scan cannot explode the series.
    """
    route = scope.get("route")
    if route is None:
        return "unmatched"
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else "unmatched"


# Scope key of the headers that code behind the edge adds to the answer.
_EXTRA_HEADERS = "petpal.response_headers"


def add_response_headers(scope: Scope, headers: Mapping[str, str]) -> None:
    """Headers for this request's answer, whatever the handler returns.

    The request edge writes them into the response start, so they reach the
    client on a model, on a Response a handler built itself and on an error.
    """
    given = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    names = {name for name, _ in given}
    # A header given again replaces the one given before (a rate limit's
    # quota, checked early and charged later).
    kept = [item for item in scope.get(_EXTRA_HEADERS, ()) if item[0] not in names]
    scope[_EXTRA_HEADERS] = kept + given


_REQUEST_ID = re.compile(rb"[!-~]{1,64}")


def request_id_for(given: bytes | None) -> bytes:
    """The id of a request whose ``X-Request-ID`` is ``given``.

    A caller's id is kept when it is up to 64 visible ASCII characters (a
    UUID, a trace id); anything else gets an id of ours, so that logs and
    the answer never carry bytes a client made up.
    """
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(8).hex().encode()


# The API's answers are kept by no cache unless a route says otherwise:
# tokens (RFC 6749 section 5.1 asks it of them), a home feed, a post with
# "liked_by_me", all depend on who asks, and no answer said so (found by a
# trial: a shared cache could have served one person's to another).
API_PATHS = "/api/"
_NO_STORE = (b"cache-control", b"no-store")


class RequestEdgeMiddleware:
    """Request id, latency and query metrics, in plain ASGI to stay cheap.

    The histogram children are looked up once per (method, route, status)
    and kept: ``labels()`` takes a lock and builds its key on every call.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seconds: dict[tuple[str, str, int], Any] = {}
        self._queries: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoded_id = request_id_for(raw_header(scope, b"x-request-id"))
        request_id = encoded_id.decode()
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        counter = [0]
        token = queries_in_scope.set(counter)
        status = 500
        started = time.perf_counter()

        answered = False

        api = scope["path"].startswith(API_PATHS)

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", encoded_id))
                extra = scope.get(_EXTRA_HEADERS)
                if extra:
                    # The answer's own win: a 429 says the quota it refused
                    # on, not the one an earlier limit of the route passed.
                    own = {name.lower() for name, _ in headers}
                    headers += [item for item in extra if item[0] not in own]
                if api and not any(name == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The body never came whole: its client went away (a phone that
            # lost its network mid-upload), or the server cut it off with a
            # 408. Nothing to answer, and no fault of ours: logged as such
            # and counted as 499, nginx's "client closed request", not as a
            # bug and a 500 (found by a trial).
            log.info("request.body_not_received", path=scope["path"])
            if not answered:
                status = 499
        except Exception:
            if answered:
                # Too late for a 500: the answer was begun. Logged here, with
                # the request id, and the connection is cut, since the app
                # returns with its answer unfinished (uvicorn closes it,
                # saying so in one line; raised again, the trace was logged
                # twice, the second time without the id).
                log.exception("request.failed_mid_answer", path=scope["path"])
                return
            # A bug. Answered here rather than by Starlette's outermost
            # handler, which answers and then raises again: uvicorn then
            # dropped the connection with what was pipelined on it, and the
            # answer and the log line had no request id (found by a trial).
            log.exception("request.unhandled_error", path=scope["path"])
            body = problem_document(
                500, "internal_error", INTERNAL_ERROR_DETAIL, scope["path"]
            )
            headers = [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            await send_with_id(
                {"type": "http.response.start", "status": 500, "headers": headers}
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope)
            key = (scope["method"], template, status)
            seconds = self._seconds.get(key)
            if seconds is None:
                seconds = REQUEST_SECONDS.labels(key[0], template, str(status))
                self._seconds[key] = seconds
            seconds.observe(elapsed)
            queries = self._queries.get(template)
            if queries is None:
                queries = self._queries[template] = REQUEST_QUERIES.labels(template)
            queries.observe(counter[0])
            queries_in_scope.reset(token)
            structlog.contextvars.reset_contextvars(**tokens)
