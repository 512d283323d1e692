"""Requests that are not HTTP get a problem document from the server itself.

A real uvicorn server on loopback, with the protocol ``petpal serve`` runs,
in front of the test's app; the requests are raw bytes on a socket, since
no HTTP client sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from petpal.platform.http_protocol import ProblemHttpToolsProtocol


@pytest.fixture
async def port(app: FastAPI) -> AsyncIterator[int]:
    """The app served by uvicorn on a free loopback port (its lifespan is
    the fixture's own, already started)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=ProblemHttpToolsProtocol,
        lifespan="off",
        log_level="critical",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await serving


async def exchange(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Status line, headers and body of the answer to ``request``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return status.encode(), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "instance"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", "/healthz"),
        (b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", ""),
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", ""),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", "/healthz"),
        (
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nnot-a-size\r\n",
            "/api/v1/auth/token",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ""),  # a TLS hello
    ],
    ids=[
        "header-without-colon",
        "method",
        "non-ascii-path",
        "control-character",
        "chunk-size",
        "tls-to-plain-port",
    ],
)
async def test_a_request_that_is_not_http_gets_a_problem(
    port: int, request_bytes: bytes, instance: str
) -> None:
    status, headers, body = await exchange(port, request_bytes)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem = orjson.loads(body)
    assert problem == {
        "type": "https://petpal.example/problems/malformed-request",
        "title": "Bad Request",
        "status": 400,
        "detail": problem["detail"],
        "instance": instance,
        "code": "malformed_request",
    }
    assert "HTTP/1.1" in problem["detail"]


async def test_well_formed_requests_are_served_as_before(port: int) -> None:
    status, headers, body = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(body) == {"status": "ok"}
    assert headers["x-request-id"]
