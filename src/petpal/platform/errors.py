"""One error type for the whole API, rendered as an RFC 9457 problem document.

Services raise :class:`ProblemError` (or one of its named subclasses) with the
HTTP status and a short machine-readable ``code``; the handlers installed by
:func:`install_problem_handlers` turn it, and every error raised by the
framework itself, into ``application/problem+json``. Nothing reaches the
client as a bare 500 with a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger(__name__)


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
    body: dict[str, Any] = {
        "type": f"https://petpal.example/problems/{code.replace('_', '-')}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
    }
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
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
    return {"location": location, "message": str(error.get("msg", "invalid"))}


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(
            request, 400, "malformed_json", "the request body is not valid JSON"
        )
    described = [_describe_validation_error(e) for e in errors]
    first = described[0] if described else {"location": [], "message": "invalid"}
    where = ".".join(first["location"][1:]) or "request"
    return problem_response(
        request,
        422,
        "validation_failed",
        f"{where}: {first['message']}",
        extra={"errors": described},
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
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


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("request.unhandled_error", path=request.url.path)
    return problem_response(
        request, 500, "internal_error", "an unexpected error occurred; it was logged"
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
