"""FastAPI dependencies shared by every service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from petpal.platform.errors import UnauthorizedError
from petpal.platform.pagination import DEFAULT_LIMIT, MAX_LIMIT
from petpal.platform.security import AccessClaims, read_access_token
from petpal.platform.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def optional_account(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> AccessClaims | None:
    token = _bearer_token(request)
    if token is None:
        return None
    claims = read_access_token(services.secret, token)
    if claims is None:
        raise UnauthorizedError("the access token is invalid or has expired")
    return claims


def require_account(
    claims: Annotated[AccessClaims | None, Depends(optional_account)],
) -> AccessClaims:
    if claims is None:
        raise UnauthorizedError()
    return claims


ServicesDep = Annotated[Services, Depends(get_services)]
CurrentAccount = Annotated[AccessClaims, Depends(require_account)]
OptionalAccount = Annotated[AccessClaims | None, Depends(optional_account)]
CursorParam = Annotated[str | None, Query(max_length=1024)]
LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
DEFAULT_PAGE_SIZE = DEFAULT_LIMIT
