"""The app factory: mounts every service's routes on one FastAPI app.

Embedded, one process serves all services; a distributed deployment runs the
same factory with ``services=`` naming the ones that deployment serves.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import re
from collections.abc import AsyncIterator, Container, Iterable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.exc
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from petpal.identity.service import AccountGoneError, ensure_account_exists
from petpal.platform.cache import CacheBackendError
from petpal.platform.deps import (
    CALLER_SCOPE_KEY,
    RATE_LIMIT_DEPENDENCIES,
    optional_account,
    require_account,
)
from petpal.platform.errors import (
    PROBLEM_MEDIA_TYPE,
    BodyTooLargeError,
    NotFoundError,
    install_problem_handlers,
    on_problem,
    problem_response,
)
from petpal.platform.jobs import refresh_outbox_gauges
from petpal.platform.json_body import JSONRoute
from petpal.platform.observability import (
    RequestEdgeMiddleware,
    configure_logging,
    raw_header,
)
from petpal.platform.ratelimit import AnonymousLimitMiddleware
from petpal.platform.routing import index_routes
from petpal.platform.services import SERVICE_NAMES, Services, import_task_modules
from petpal.platform.settings import Settings, get_settings
from petpal.platform.storage import ObjectNotFoundError

API_PREFIX = "/api/v1"
# The collector's thresholds in a serving process, after start-up (see
# create_app): young, middle and old generation, as gc.set_threshold takes.
SERVING_GC_THRESHOLDS = (10_000, 10, 10)


class Problem(BaseModel):
    """An RFC 9457 problem document, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Machine-readable reason, e.g. 'not_found'")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Each invalid field, for validation_failed"
    )


_PROBLEM_CONTENT = {
    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
}


def _integer_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer"}}


_RETRY_AFTER = {"Retry-After": _integer_header("Seconds to wait before trying again")}
# What platform/ratelimit.py's Quota sends: on every 429, and on every answer
# of the routes that charge a limit of their own (_add_routes).
QUOTA_HEADERS = {
    "X-RateLimit-Limit": _integer_header("Requests the tightest limit allows"),
    "X-RateLimit-Remaining": _integer_header("Requests left under that limit"),
    "X-RateLimit-Reset": _integer_header(
        "Unix time, in seconds, by which a request counts no more against it"
    ),
}
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    429: {**_RETRY_AFTER, **QUOTA_HEADERS},
    503: _RETRY_AFTER,
}
# Documented on every API route, so clients and schema-driven tests know that
# errors are problem documents (this also replaces FastAPI's default 422 body).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": _PROBLEM_CONTENT,
        **({"headers": _PROBLEM_HEADERS[status]} if status in _PROBLEM_HEADERS else {}),
    }
    for status, description in {
        400: "Malformed JSON, multipart body or cursor",
        401: "Missing, invalid or expired access token",
        403: "The object belongs to someone else",
        404: "No such object",
        409: "Conflicts with existing data (e.g. a taken username)",
        413: "Body, file or image too large",
        415: "Unsupported content or media type",
        422: "Well-formed but invalid input",
        429: "Rate limited; retry after Retry-After seconds",
        503: "A backend is unavailable; retry after Retry-After seconds",
    }.items()
}


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, before a handler reads them.

    Uploads (``POST /api/v1/media``) enforce their own, larger limit while
    streaming; every other route gets ``max_json_body_bytes``.
    """

    def __init__(self, app: ASGIApp, max_json: int, max_upload: int) -> None:
        self.app = app
        self.max_json = max_json
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["path"] == f"{API_PREFIX}/media"
        limit = self.max_upload if is_upload else self.max_json
        declared = raw_header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, limit: int
    ) -> None:
        request = Request(scope, receive)
        response = problem_response(
            request,
            413,
            "body_too_large",
            f"the request body exceeds {limit} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class AdmissionMiddleware:
    """At most ``limit`` requests at work in this process; the rest wait, briefly.

    Without it, a burst let every request in at once: more of them wanted a
    Redis connection than the pool holds, their waits ran out, the cache
    took that for Redis being down and sent every read to the database,
    which is many times slower, so the queue grew further. An open loop at
    80% of a post read's capacity collapsed that way into 10 s answers and
    errors. Here a request beyond the limit waits up to ``wait_seconds`` for
    a place, then gets a 503 problem with Retry-After: the process sheds
    what it cannot do instead of slowing everything down. A request holds
    its place only while it works, not while it waits for its client's body.
    Health, readiness and metrics always pass.
    """

    _EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, limit: int, wait_seconds: float) -> None:
        self.app = app
        self.wait_seconds = wait_seconds
        self.places = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.places.locked():
            try:
                await asyncio.wait_for(self.places.acquire(), self.wait_seconds)
            except TimeoutError:
                ADMISSION_REFUSED.inc()
                response = problem_response(
                    Request(scope, receive),
                    503,
                    "overloaded",
                    "the server is at capacity; try again in a moment",
                    headers={"Retry-After": "1"},
                )
                await response(scope, receive, send)
                return
        else:
            await self.places.acquire()
        # A place is for work, not for waiting on the client: while the app
        # waits for the request body (or for a disconnect), the place is
        # given back, and taken again, in turn, once the message is here. A
        # client that sends half a body and stalls holds no place.
        owned = True
        retaking: asyncio.Lock | None = None  # made by the first receive

        async def receive_without_place() -> Message:
            nonlocal owned, retaking
            if retaking is None:
                retaking = asyncio.Lock()
            if owned:
                owned = False
                self.places.release()
            message = await receive()
            async with retaking:
                if not owned:
                    await self.places.acquire()
                    owned = True
            return message

        try:
            await self.app(scope, receive_without_place, send)
        finally:
            if owned:
                self.places.release()


ADMISSION_REFUSED = Counter(
    "petpal_http_requests_refused_total",
    "Requests answered 503 because the process was at its concurrency limit",
)


def create_app(
    settings: Settings | None = None,
    services: Iterable[str] = SERVICE_NAMES,
    *,
    own_process: bool = False,
) -> FastAPI:
    """The app serving ``services``.

    ``own_process``: the app is all its process serves (``petpal serve``),
    so it may set what is the whole process's: where the libraries' log
    records go, and how the garbage collector runs after start-up. Not in
    tests, which start hundreds of apps in one process.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json, libraries=own_process)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = Services.build(settings)
        app.state.services = platform
        await platform.start()
        if own_process:
            # What start-up made lives as long as the process: moved out of
            # the collector's sight, it no longer lengthens every full
            # collection, which paused a serving process for up to 160 ms.
            gc.collect()
            gc.freeze()
            # A young collection every 10,000 new objects instead of 700:
            # a request makes hundreds, so the collector ran several times
            # a request, 5 to 6% of a post read's CPU. Each one now scans
            # at most 10,000 objects, well under a millisecond. Back to back
            # on 200k (cached post reads, closed loop): 2,250 to 2,840 a
            # second against 2,080 to 2,290 at the default.
            gc.set_threshold(*SERVING_GC_THRESHOLDS)
        try:
            yield
        finally:
            await platform.close()

    # Its /docs and /redoc load their scripts and styles from this server:
    # FastAPI's own load them from a CDN, and showed a blank page on a
    # network without one (found by a trial). /redoc is ours (below).
    app = FastAPIOffline(
        redoc_url=None,
        title="PetPal Connect",
        version="0.1.0",
        description="The social platform for pet owners. All routes live under "
        "/api/v1; errors are RFC 9457 problem documents.",
        lifespan=lifespan,
        # A path with a slash too many or too few is a 404 problem, not a
        # redirect: Starlette's redirect named whatever host the request's
        # Host header said (found by a trial: Location: http://evil.example/...),
        # and a %2F at the end of an id became one too.
        redirect_slashes=False,
    )
    install_problem_handlers(app)
    app.add_exception_handler(sqlalchemy.exc.IntegrityError, _on_integrity_error)
    names = tuple(services)
    for name in names:
        module = importlib.import_module(f"petpal.{name}.api")
        _add_routes(app, module.router, responses=PROBLEM_RESPONSES)
    if settings.benchmark_baselines:
        from petpal.platform import baselines

        _add_routes(app, baselines.router)
    import_task_modules(names)
    _add_operational_routes(app)
    _register_problem_schema(app)
    index_routes(app.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_json=settings.max_json_body_bytes,
        max_upload=settings.max_upload_bytes + 64 * 1024,
    )
    # Outside the body limit, inside the request edge: anonymous floods are
    # refused before any body is read, and still show in the metrics.
    app.add_middleware(AnonymousLimitMiddleware)
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.max_concurrent_requests,
        wait_seconds=settings.admission_wait_seconds,
    )
    app.add_middleware(RequestEdgeMiddleware)
    return app


async def _on_integrity_error(request: Request, exc: Exception) -> Response:
    """A foreign key that failed because the caller's own account is gone is
    a 401 (see ``ensure_account_exists``); any other stays a bug."""
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if caller is not None:
        try:
            await ensure_account_exists(request.app.state.services, caller)
        except AccountGoneError as gone:
            return await on_problem(request, gone)
    raise exc


# The name the OpenAPI schema gives the access token's scheme.
BEARER_SCHEME = "bearerAuth"


def _add_routes(
    app: FastAPI,
    router: APIRouter,
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> None:
    """Each of ``router``'s routes, as a route of the app under the API prefix.

    What ``app.include_router(router, prefix=…, responses=…)`` would serve,
    but flat: FastAPI keeps an included router as one entry that it matches
    in two passes over every route it holds, on every request, which was a
    third of the CPU of a request that did nothing (docs/benchmarks.md). A
    route of the app itself is matched once, by its own regular expression.
    The OpenAPI schema is the same (tests/platform/test_routing.py).
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"only API routes are served flat, not {route!r}")
        dependencies = list(route.dependencies)
        # A route's own word on a status (its description, say) is added to
        # the common one, which keeps the problem document's schema.
        generic = responses or {}
        documented = {
            status: {**generic.get(status, {}), **route.responses.get(status, {})}
            for status in {*generic, *route.responses}
        }
        # A route that charges a rate limit answers with the quota headers.
        if _depends_on(route.dependant, RATE_LIMIT_DEPENDENCIES):
            # Sent with whatever the route answers once the limit let the
            # request through (a 404, a 422), so declared on every answer.
            for status in {route.status_code or 200, *documented}:
                response = documented.get(status, {})
                headers = {**response.get("headers", {}), **QUOTA_HEADERS}
                documented[status] = {**response, "headers": headers}
        needs_token = _depends_on(route.dependant, (require_account,))
        reads_token = needs_token or _depends_on(route.dependant, (optional_account,))
        if route.methods == {"GET"} and not reads_token:
            # A token offered to a read is checked on every read, so a bad
            # one is a 401 everywhere, not only where the route reads the
            # caller. (Not on sign-up, log-in and refresh, where a client
            # may well still send the access token that just expired.)
            dependencies.append(Depends(optional_account))
            reads_token = True
        # Which routes take the bearer token, and which need it, as the
        # schema says it (found by a trial: /docs had no Authorize button,
        # and nothing told which routes need a token). An empty requirement
        # beside the token's makes it optional.
        if not reads_token and 401 not in route.responses:
            # The common 401 is about the access token: a route that takes
            # none answers 401 only where it says why (wrong credentials, a
            # spent refresh token), or never (found by a trial: sign-up and
            # log-out listed it).
            documented.pop(401, None)
        openapi_extra = dict(route.openapi_extra or {})
        if reads_token:
            openapi_extra["security"] = [{BEARER_SCHEME: []}] + (
                [] if needs_token else [{}]
            )
        app.router.add_api_route(
            API_PREFIX + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=documented,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            # A route with a body reads it as JSON is defined; the others
            # skip the wrapper's cost.
            route_class_override=JSONRoute if route.body_field else APIRoute,
            callbacks=route.callbacks,
            openapi_extra=openapi_extra or None,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
        )


def _depends_on(dependant: Dependant, calls: Container[object]) -> bool:
    """Whether a route depends on any of ``calls``, at any depth."""
    return any(d.call in calls or _depends_on(d, calls) for d in dependant.dependencies)


def create_server_app() -> ASGIApp:
    """What ``petpal serve`` runs: the app from the environment's settings.

    A factory, so that each of uvicorn's worker processes makes its own; with
    ``PETPAL_BENCHMARK_BASELINES`` on, the baseline paths answer in front of
    the app's middleware (platform/baselines.py).
    """
    settings = get_settings()
    app = create_app(settings, own_process=True)
    if not settings.benchmark_baselines:
        return app
    from petpal.platform.baselines import with_baselines

    return with_baselines(app)


def _register_problem_schema(app: FastAPI) -> None:
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema()
            components["securitySchemes"] = {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token from POST /api/v1/auth/token "
                    "(15 minutes; POST /api/v1/auth/refresh for the next).",
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Where FastAPIOffline serves the docs pages' scripts (its default).
_DOCS_STATIC = "/static-offline-docs"
# ReDoc's bundle puts Redocly's logo in its footer, from Redocly's CDN (found
# by a trial): the page may load images from this server and data: URLs
# alone, so it asks no other host for anything.
_REDOC_POLICY = "img-src 'self' data:"


def _metrics_text() -> bytes:
    """The metrics of this process, or of all of ``petpal serve --workers N``'s
    (they count into ``PROMETHEUS_MULTIPROC_DIR``, and any of them answers)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _add_operational_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{_DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _REDOC_POLICY
        return page

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        platform: Services = request.app.state.services
        checks: dict[str, str] = {}
        try:
            async with platform.db.read_session() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means "not ready", reported as such
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            await platform.storage.check()
            checks["storage"] = "ok"
        except Exception as exc:  # idem
            checks["storage"] = f"error: {type(exc).__name__}"
        ready = checks["database"] == "ok" and checks["storage"] == "ok"
        # The cache is reported but does not decide readiness: without it,
        # reads are answered from the database, slower but correct.
        ping = getattr(platform.cache.backend, "ping", None)
        if ping is not None:
            try:
                await ping()
                checks["cache"] = "ok"
            except CacheBackendError as exc:
                checks["cache"] = f"degraded: {exc}"
        if ready:
            status = "ready" if checks.get("cache", "ok") == "ok" else "degraded"
            return JSONResponse({"status": status, "checks": checks})
        return problem_response(
            request,
            503,
            "not_ready",
            "a backend does not answer",
            headers={"Retry-After": "5"},
            extra={"checks": checks},
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        platform: Services = request.app.state.services
        await refresh_outbox_gauges(platform.db)
        return Response(_metrics_text(), media_type=CONTENT_TYPE_LATEST)

    # HEAD too: caches and clients (curl -I) ask a file's size and type
    # without its bytes (found by a trial: 405).
    @app.api_route(
        "/media-files/{key:path}", methods=["GET", "HEAD"], include_in_schema=False
    )
    async def media_file(key: str, request: Request) -> Response:
        # Only processed variants live under media/; raw uploads never leave.
        if not _SERVED_KEY.fullmatch(key):
            raise NotFoundError("the file")
        platform: Services = request.app.state.services
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        }
        try:
            if request.method == "HEAD":
                size = await platform.storage.size(key)
                headers["Content-Length"] = str(size)
                return Response(headers=headers, media_type=_content_type_for(key))
            size, chunks = await platform.storage.stream(key)
        except ObjectNotFoundError as exc:
            raise NotFoundError("the file") from exc
        headers["Content-Length"] = str(size)
        return StreamingResponse(
            chunks, media_type=_content_type_for(key), headers=headers
        )


# media/<26-character id>/<variant>.<extension>: what media.tasks writes, and
# nothing else (no empty segments, no dot-dot, no trailing slash).
_SERVED_KEY = re.compile(r"media/[0-9A-Z]{26}/[a-z]{1,20}\.(jpg|webp|png)")


def _content_type_for(key: str) -> str:
    suffix = key.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}.get(
        suffix, "application/octet-stream"
    )
