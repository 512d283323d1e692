"""Logs, metrics and the request edge.

Every request gets an id (from ``X-Request-ID`` when a proxy set one), bound
into the structlog context so each log line of that request carries it. The
middleware records the latency histogram per route template and status, and
how many SQL statements the request sent.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import structlog
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from petpal.platform.db import queries_in_scope

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


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        cache_logger_on_first_use=True,
    )


def route_template(scope: Scope) -> str:
    """The matched route as a template, e.g. ``/api/v1/posts/{post_id}``.

    Rebuilt from the path and its parameters, because the route object that
    the router leaves in the scope may not carry the prefix it was mounted at.
    Unmatched paths share one label, so a scan cannot explode the series.
    """
    if scope.get("route") is None:
        return "unmatched"
    path: str = scope["path"]
    params = scope.get("path_params", {})
    for name, value in params.items():
        text = str(value)
        # A {name:path} parameter spans segments; it always ends the path.
        if "/" in text and path.endswith(text):
            path = path[: len(path) - len(text)] + "{" + name + "}"
    segments = path.split("/")
    for name, value in params.items():
        text = str(value)
        for index in range(len(segments) - 1, -1, -1):
            if segments[index] == text:
                segments[index] = "{" + name + "}"
                break
    return "/".join(segments)


class RequestEdgeMiddleware:
    """Request id, latency and query metrics, in plain ASGI to stay cheap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = request_id or secrets.token_hex(8)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        counter = [0]
        token = queries_in_scope.set(counter)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = route_template(scope)
            REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
            REQUEST_QUERIES.labels(template).observe(counter[0])
            queries_in_scope.reset(token)
            structlog.contextvars.unbind_contextvars("request_id")
