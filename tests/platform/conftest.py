"""Fixtures of the platform tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI

from petpal.platform.http_protocol import ProblemHttpToolsProtocol


@pytest.fixture
def keep_alive_seconds() -> float:
    """How long the server keeps an idle connection open (uvicorn's default)."""
    return 5.0


@pytest.fixture
async def port(app: FastAPI, keep_alive_seconds: float) -> AsyncIterator[int]:
    """The app served by uvicorn on a free loopback port (its lifespan is
    the fixture's own, already started)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=ProblemHttpToolsProtocol,
        ws="none",
        lifespan="off",
        log_level="critical",
        timeout_keep_alive=keep_alive_seconds,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await serving
