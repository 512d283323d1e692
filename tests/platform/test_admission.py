"""Admission: a process at its concurrency limit queues briefly, then sheds."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from petpal.platform.app import AdmissionMiddleware
from petpal.platform.settings import Settings


class _Held:
    """An app whose answers wait until released; counts what it admitted."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.admitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.admitted += 1
        if scope["path"] == "/slow":
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _client(app: AdmissionMiddleware) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://petpal.test")


async def test_beyond_the_limit_a_request_waits_then_gets_a_503_problem() -> None:
    held = _Held()
    app = AdmissionMiddleware(held, limit=2, wait_seconds=0.1)
    async with _client(app) as client:
        slow = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await client.get("/api/v1/feed/home")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "overloaded"
        # Health, readiness and metrics are never queued.
        assert (await client.get("/healthz")).status_code == 200
        held.release.set()
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
        assert (await client.get("/api/v1/feed/home")).status_code == 200
    assert held.admitted == 4  # the refused request never reached the app


async def test_a_waiting_request_takes_a_place_that_frees_in_time() -> None:
    held = _Held()
    app = AdmissionMiddleware(held, limit=1, wait_seconds=5)
    async with _client(app) as client:
        first = asyncio.create_task(client.get("/slow"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(client.get("/fast"))
        await asyncio.sleep(0.05)
        assert not second.done()  # queued, not refused
        held.release.set()
        assert (await first).status_code == 200
        assert (await second).status_code == 200


def test_the_limit_stays_under_the_redis_pool() -> None:
    settings = Settings()
    assert settings.max_concurrent_requests < settings.cache_max_connections


async def test_a_stalled_request_body_holds_no_place() -> None:
    """A client that sends half a body and stops must not jam the process."""
    reached = asyncio.Event()
    stall = asyncio.Event()

    async def reads_its_body(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/upload":
            reached.set()
            while (await receive()).get("more_body"):
                pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def stalled_receive() -> dict[str, object]:
        await stall.wait()  # the rest of the body never comes (until the end)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def ignored(message: object) -> None:
        pass

    app = AdmissionMiddleware(reads_its_body, limit=1, wait_seconds=0.1)
    upload = {"type": "http", "path": "/upload", "method": "POST", "headers": []}
    stalled = asyncio.create_task(app(upload, stalled_receive, ignored))
    await reached.wait()
    async with _client(app) as client:
        answer = await client.get("/api/v1/feed/public")
        assert answer.status_code == 200  # the stalled upload holds no place
    stall.set()
    await stalled
    assert not app.places.locked()
