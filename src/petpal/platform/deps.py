"""FastAPI dependencies shared by every service's routes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query, Request
from pydantic import BeforeValidator

from petpal.platform.errors import UnauthorizedError
from petpal.platform.observability import add_response_headers, raw_header
from petpal.platform.pagination import DEFAULT_LIMIT, MAX_LIMIT
from petpal.platform.ratelimit import client_ip, login_key
from petpal.platform.security import AccessClaims, read_access_token
from petpal.platform.services import Services
from petpal.platform.text import LOGIN_MAX_LENGTH, check_storable, fold

# Every dependency here is ``async def``, though none of them awaits: FastAPI
# runs a plain ``def`` dependency in a worker thread, which cost more CPU per
# request than all of the rest of the authentication (docs/benchmarks.md).
# The account dependencies take the request alone rather than depending on
# ``get_services`` and on each other: each level of sub-dependency is another
# pass of FastAPI's dependency solver on every request.


# The account id of the request's valid access token, if it has one.
CALLER_SCOPE_KEY = "petpal.caller"


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _bearer_token(request: Request) -> str | None:
    raw = raw_header(request.scope, b"authorization")
    if not raw:
        return None
    scheme, _, token = raw.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _claims(request: Request) -> AccessClaims | None:
    token = _bearer_token(request)
    if token is None:
        return None
    services: Services = request.app.state.services
    claims = read_access_token(services.secret, token)
    if claims is None:
        raise UnauthorizedError("the access token is invalid or has expired")
    request.scope[CALLER_SCOPE_KEY] = claims.account_id
    return claims


async def optional_account(request: Request) -> AccessClaims | None:
    return _claims(request)


async def require_account(request: Request) -> AccessClaims:
    claims = _claims(request)
    if claims is None:
        raise UnauthorizedError()
    return claims


# What ``/accounts/{username}/…`` takes for the signed-in account, as
# ``/accounts/me`` does: a reserved name, which no account has. Spelt as
# any username may be (``ME``, full-width ``ｍｅ``).
ME = "me"


def is_me(username: str) -> bool:
    return fold(username) == ME


async def caller_if_me(request: Request, username: str) -> AccessClaims | None:
    """The caller, if the path's account is ``me`` (which needs its token);
    otherwise None, and no token is read, as for any public read."""
    return await require_account(request) if is_me(username) else None


PathCaller = Annotated[AccessClaims | None, Depends(caller_if_me)]


async def _enforce(
    request: Request,
    services: Services,
    checks: Sequence[tuple[str, str]],
    later: Sequence[tuple[str, str]] = (),
) -> None:
    quota = await services.limiter.enforce(checks, later=later)
    if quota is not None:
        # Added to whatever the handler answers, a model or a Response of its
        # own, by the request edge (FastAPI's injected Response would reach
        # the client only with a model).
        add_response_headers(request.scope, quota.headers())


def _client_ip(request: Request, services: Services) -> str:
    return client_ip(request, services.settings.trusted_proxies)


# For the routes that answer 201 or 202 with where the new object lives.
LOCATION = {
    "Location": {
        "description": "The path of what was created",
        "schema": {"type": "string"},
    }
}

# The dependencies that charge a rate limit, so that the app can document
# the X-RateLimit-* headers on the routes that carry them (platform/app.py).
RATE_LIMIT_DEPENDENCIES: set[Callable[..., Awaitable[None]]] = set()


async def limit_sign_up(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
) -> None:
    """Every attempt counts against the client's ``sign_up_attempt`` limit.
    ``sign_up`` is only checked here, so that a spent one is refused before
    the attempt costs anything; the route charges it once what was typed
    has passed (:func:`sign_up_admission`): a person retyping a refused
    password is not locked out for an hour."""
    ip = _client_ip(request, services)
    await _enforce(
        request, services, [("sign_up_attempt", ip)], later=[("sign_up", ip)]
    )


Admission = Callable[[], Awaitable[None]]


def sign_up_admission(request: Request, services: Services) -> Admission:
    """What a route calls once a sign-up (or a change of address) has
    passed every check of what was typed, before it looks for the name or
    address taken: one hit against the client's ``sign_up`` limit, a 429
    when it is spent. Taken at that point, atomically, so that sign-ups
    sent together cannot all find the last slot free (found by a trial: 25
    at once made 25 accounts), and an answer that an address is taken
    costs one too."""

    async def admit() -> None:
        await _enforce(request, services, [("sign_up", _client_ip(request, services))])

    return admit


async def limit_log_in(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
) -> None:
    checks = [("log_in_ip", _client_ip(request, services))]
    login = await _submitted_login(request)
    if login is not None:
        owner = await _login_owner(services, login) if _login_owner else None
        checks.append(("log_in_name", login_key(login, owner)))
    await _enforce(request, services, checks)


# Which account a log-in names, if any: the identity service's to say
# (``resolves_logins``), so that the account's bucket is charged however
# the login spells it.
LoginOwner = Callable[[Services, str], Awaitable[str | None]]
_login_owner: LoginOwner | None = None


def resolves_logins(owner: LoginOwner) -> LoginOwner:
    """Register the function that says which account a log-in names."""
    global _login_owner
    _login_owner = owner
    return owner


async def limit_password_check(
    request: Request,
    me: Annotated[AccessClaims, Depends(require_account)],
    services: Annotated[Services, Depends(get_services)],
) -> None:
    """A route that checks the caller's password again (deleting the
    account) counts as a log-in attempt of theirs: a stolen access token
    guesses no faster there than at the log-in."""
    checks = [
        ("log_in_ip", _client_ip(request, services)),
        ("log_in_name", login_key(me.username, me.account_id)),
    ]
    await _enforce(request, services, checks)


RATE_LIMIT_DEPENDENCIES.update((limit_sign_up, limit_log_in, limit_password_check))


async def _submitted_login(request: Request) -> str | None:
    # Read here rather than declared as the LogIn model, which belongs to the
    # identity service; FastAPI has already read (and cached) the body.
    try:
        body: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None  # the handler answers 422; the per-IP limit still counted
    login = body.get("login") if isinstance(body, dict) else None
    if not isinstance(login, str) or not login.strip() or len(login) > LOGIN_MAX_LENGTH:
        return None
    try:
        # Looked up before the body is validated: what the model refuses
        # (a NUL, a lone surrogate) must not reach the database, where a
        # NUL was a 500 on PostgreSQL (found by a trial). The handler
        # answers the 422; the per-IP limit still counted.
        return check_storable(login)
    except ValueError:
        return None


def limit_per_account(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency that charges the signed-in account against limit ``name``."""

    async def enforce(
        request: Request,
        me: Annotated[AccessClaims, Depends(require_account)],
        services: Annotated[Services, Depends(get_services)],
    ) -> None:
        await _enforce(request, services, [(name, me.account_id)])

    RATE_LIMIT_DEPENDENCIES.add(enforce)
    return enforce


ServicesDep = Annotated[Services, Depends(get_services)]
CurrentAccount = Annotated[AccessClaims, Depends(require_account)]
OptionalAccount = Annotated[AccessClaims | None, Depends(optional_account)]
CursorParam = Annotated[str | None, Query(max_length=1024)]
_DIGITS = re.compile(r"[0-9]+")


def _in_digits(value: object) -> object:
    # pydantic reads "1.0", " 5", "+5" and even "5_0" (as 50) as integers;
    # a count in a query is written in digits, or it is a mistake worth
    # telling (a client computing 1.5 sent "1.5": refused, not cut to 1).
    if isinstance(value, str) and _DIGITS.fullmatch(value) is None:
        raise ValueError("a whole number, written in the digits 0 to 9")
    return value


LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT), BeforeValidator(_in_digits)]
DEFAULT_PAGE_SIZE = DEFAULT_LIMIT
