"""One error type for the whole API, rendered as an RFC 9457 problem document.

Services raise :class:`ProblemError` (or one of its named subclasses) with the
HTTP status and a short machine-readable ``code``; the handlers installed by
:func:`install_problem_handlers` turn it, and every error raised by the
framework itself, into ``application/problem+json``. Nothing reaches the
client as a bare 500 with a stack trace, and a backend that is down or
restarting is a 503 with ``Retry-After`` (see :func:`backend_unavailable`).
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
import redis.exceptions
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger(__name__)

UNAVAILABLE_ANSWERS = Counter(
    "petpal_http_unavailable_total",
    "Requests answered 503 because a backend was down, restarting or saturated",
    ["code"],
)
# Seconds a client is told to wait after a 503: about what a PostgreSQL
# restart or a failover takes.
RETRY_AFTER_SECONDS = 5


class ProblemError(Exception):
    """An error the client caused or must know about, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class NotFoundError(ProblemError):
    def __init__(self, what: str) -> None:
        super().__init__(404, "not_found", f"{what} was not found")


class ForbiddenError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, "forbidden", detail)


class ConflictError(ProblemError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(409, code, detail)


class InvalidInputError(ProblemError):
    """A request that parsed but makes no sense (422), e.g. a foreign media id."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(422, code, detail)


class UnauthorizedError(ProblemError):
    def __init__(self, detail: str = "a valid bearer access token is required") -> None:
        super().__init__(
            401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
        )


class BodyTooLargeError(StarletteHTTPException):
    """Raised while a body streams in past its limit.

    An ``HTTPException`` rather than a ``ProblemError`` because FastAPI turns
    any other exception raised while it reads a body into a plain 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


def problem_type(code: str) -> str:
    """The problem type URI of an error code: ``not_found`` → ``…/not-found``."""
    return f"https://petpal.example/problems/{code.replace('_', '-')}"


def problem_document(
    status: int,
    code: str,
    detail: str,
    instance: str,
    *,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """An RFC 9457 problem document, as every error answer's body."""
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    return Response(
        problem_document(
            status, code, detail, request.url.path, title=title, extra=extra
        ),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        exc.code,
        exc.detail,
        title=exc.title,
        headers=exc.headers,
        extra=exc.extra,
    )


def _describe_validation_error(error: Mapping[str, Any]) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "invalid"))
    raised = (error.get("ctx") or {}).get("error")
    if error.get("type") == "value_error" and raised is not None:
        # Our validators' own words, without pydantic's "Value error, " in
        # front (found by a trial).
        message = str(raised)
    return {"location": location, "message": message}


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if isinstance(exc.body, bytes) and exc.body:
        # FastAPI hands a JSON route the raw bytes when the body is not
        # labelled as JSON; what follows would only say "not an object".
        sent = (request.headers.get("content-type") or "no content type")[:80]
        return problem_response(
            request,
            415,
            "unsupported_media_type",
            f"send the body as application/json (it came as {sent})",
        )
    for error in errors:
        if error.get("type") == "json_invalid":
            why = (error.get("ctx") or {}).get("error")
            return problem_response(
                request,
                400,
                "malformed_json",
                "the request body is not valid JSON"
                + (f": {why}" if isinstance(why, str) and why else ""),
            )
    described = [_describe_validation_error(e) for e in errors]
    first = described[0] if described else {"location": [], "message": "invalid"}
    # ["body", "name"] is the field "name"; ["body"] alone, the body itself.
    location = first["location"]
    where = ".".join(location[1:]) or (location[0] if location else "request")
    return problem_response(
        request,
        422,
        "validation_failed",
        f"{where}: {first['message']}",
        extra={"errors": described},
    )


def _why_json_body_unreadable(exc: StarletteHTTPException) -> str | None:
    """What was wrong with a JSON body that FastAPI could not parse, or None.

    FastAPI turns only ``JSONDecodeError`` into a validation error; any other
    failure of ``json.loads`` becomes a bare 400 "There was an error parsing
    the body", raised from the error. These are the ones a client's bytes
    cause.
    """
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeError):
        return "the request body is not valid JSON: it is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the request body is not valid JSON we accept: it is nested too deeply"
    if isinstance(cause, ValueError):
        # What is left of json.loads's ValueErrors: an integer longer than
        # Python converts (sys.set_int_max_str_digits).
        limit = sys.get_int_max_str_digits()
        return (
            "the request body is not valid JSON we accept: a number in it "
            f"has more than {limit:,} digits"
        )
    return None


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):
        # FastAPI's "error parsing the body" for a body whose client went
        # away mid-way (found by a trial: counted as a 400). No one to
        # answer: the request edge logs and counts it, as it does an
        # upload's (observability.RequestEdgeMiddleware).
        raise exc.__cause__
    if (why := _why_json_body_unreadable(exc)) is not None:
        return problem_response(request, 400, "malformed_json", why)
    status = exc.status_code
    code = {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
    }.get(status, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = "no such resource"
    return problem_response(
        request, status, code, detail, headers=getattr(exc, "headers", None)
    )


INTERNAL_ERROR_DETAIL = "an unexpected error occurred; it was logged"


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # The request edge (observability) answers a bug's 500 itself; this is
    # for one raised outside it.
    log.error("request.unhandled_error", path=request.url.path, exc_info=exc)
    return problem_response(request, 500, "internal_error", INTERNAL_ERROR_DETAIL)


# SQLSTATEs after which the same request, retried a moment later, succeeds.
# The database is there but busy: 40001 and 40P01 lost a serialization or
# deadlock race, 55P03 waited too long for a lock (lock_timeout), 57014 ran
# past statement_timeout, 53300 found every connection slot taken.
_BUSY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "53300"})
# Whole classes in which it is down or going: 08 the connection broke, 53
# the server ran out of memory or disk, 57 an operator or the server
# intervened (shutdown, crash, restart in progress).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
# OSError numbers that say a peer cannot be reached, as opposed to the
# file-system errors that share the OSError type.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    }
)


def _sqlstate_problem(sqlstate: object) -> str | None:
    if not isinstance(sqlstate, str):
        return None
    if sqlstate in _BUSY_SQLSTATES:
        return "database_busy"
    if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
        return "database_unavailable"
    return None


def _is_network_error(exc: OSError) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    if exc.errno in _NETWORK_ERRNOS:
        return True
    # asyncio's connect to a name with several addresses (localhost: 127.0.0.1
    # and ::1) raises a bare OSError("Multiple exceptions: …") without errno.
    return type(exc) is OSError and exc.errno is None


def backend_unavailable(exc: BaseException) -> str | None:
    """The problem code for an error that means "a backend is down, try later".

    ``None`` for every other error, which stays a bug (500). This is the one
    place that knows how SQLAlchemy, asyncpg, aiosqlite and redis-py report a
    server that is down, restarting or saturated.
    """
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return "database_busy"  # no pooled connection came free in time
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return "database_unavailable"
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(
            exc.orig, "pgcode", None
        )
        if sqlstate is not None:
            return _sqlstate_problem(sqlstate)
        # No SQLSTATE: SQLite ("database is locked" past busy_timeout, "unable
        # to open database file") or the driver's own broken-connection error.
        interface_or_operational = (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.InterfaceError,
        )
        if isinstance(exc, interface_or_operational):
            if "is locked" in str(exc.orig):
                return "database_busy"  # a writer held it past busy_timeout
            return "database_unavailable"
        return None
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate_problem(exc.sqlstate)
    if isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
    ):
        return "backend_unavailable"
    if isinstance(exc, OSError) and _is_network_error(exc):
        # Raised as is by the drivers while connecting (refused, timed out).
        return "backend_unavailable"
    return None


async def _on_backend_error(request: Request, exc: Exception) -> Response:
    code = backend_unavailable(exc)
    if code is None:
        raise exc  # a bug after all: the generic handler answers 500
    UNAVAILABLE_ANSWERS.labels(code).inc()
    log.warning(
        "request.backend_unavailable",
        path=request.url.path,
        code=code,
        error=type(exc).__name__,
    )
    return problem_response(
        request,
        503,
        code,
        "a backend service is unavailable or overloaded; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for backend_error in (
        sqlalchemy.exc.DBAPIError,
        sqlalchemy.exc.TimeoutError,
        asyncpg.PostgresError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OSError,
    ):
        app.add_exception_handler(backend_error, _on_backend_error)
    app.add_exception_handler(Exception, _on_unexpected)
