"""Baseline routes for the benchmark report, served only when asked for.

With ``PETPAL_BENCHMARK_BASELINES=true`` the same server answers four more
paths, so the report (``benchmarks/report.py``) can set every measured
figure beside what this process, on this machine, at this moment, can do at
all:

- ``GET /_baseline/b0``: a constant, answered before any middleware (B0);
- ``GET /_baseline/b1``: the same plus one GET of a key from the cache
  backend (Redis when configured), through the app's own client (B1);
- ``GET /_baseline/b2``: the same plus one primary-key select of an account
  through the app's own database engine and session (B2);
- ``GET /api/v1/baseline/stack?n=…``: a constant behind everything a real
  route passes through: the request edge (request id, logs, metrics), the
  body and anonymous limits, bearer-token authentication, query validation
  and a response model. Its throughput over B0's is what the middleware
  costs.

They are off by default and carry no data of anyone's: B2 reads an account
id, never shows it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from petpal.identity.models import Account
from petpal.platform.deps import CurrentAccount
from petpal.platform.services import Services

B0_PATH = "/_baseline/b0"
B1_PATH = "/_baseline/b1"
B2_PATH = "/_baseline/b2"
STACK_PATH = "/baseline/stack"  # under the API prefix

_B1_KEY = "baseline:b1"
_BODY = b'{"ok":true}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
]

router = APIRouter(tags=["baseline"], include_in_schema=False)


class StackAnswer(BaseModel):
    account_id: str
    n: int


@router.get(STACK_PATH, response_model=StackAnswer)
async def stack(
    me: CurrentAccount, n: Annotated[int, Query(ge=1, le=100)] = 1
) -> StackAnswer:
    return StackAnswer(account_id=me.account_id, n=n)


class _Probes:
    """What B1 and B2 read, made on first use (the server is up by then)."""

    def __init__(self) -> None:
        self.b1_ready = False
        self.account_id: str | None = None

    async def b1(self, services: Services) -> None:
        if not self.b1_ready:
            await services.cache.backend.set(_B1_KEY, b"x" * 64, 24 * 3600)
            self.b1_ready = True
        await services.cache.backend.get(_B1_KEY)

    async def b2(self, services: Services) -> None:
        async with services.db.read_session() as session:
            if self.account_id is None:
                self.account_id = await session.scalar(select(func.min(Account.id)))
            await session.scalar(
                select(Account.id).where(Account.id == self.account_id)
            )


def with_baselines(app: FastAPI) -> ASGIApp:
    """``app`` with the B0–B2 paths answered in front of all of its middleware."""
    probes = _Probes()

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (B0_PATH, B1_PATH, B2_PATH):
            await app(scope, receive, send)
            return
        services: Services = app.state.services
        if path == B1_PATH:
            await probes.b1(services)
        elif path == B2_PATH:
            await probes.b2(services)
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})

    return asgi
