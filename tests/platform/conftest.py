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


def server_of(app: FastAPI, keep_alive_seconds: float = 5.0) -> uvicorn.Server:
    """A uvicorn server of ``app`` with the protocol ``petpal serve`` runs,
    on a free loopback port (serve it with ``start_serving``)."""
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
    return uvicorn.Server(config)


async def start_serving(server: uvicorn.Server) -> tuple[asyncio.Task[None], int]:
    """``server`` serving, once it listens, and its port."""
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    return serving, server.servers[0].sockets[0].getsockname()[1]


@pytest.fixture
async def port(app: FastAPI, keep_alive_seconds: float) -> AsyncIterator[int]:
    """The app served by uvicorn on a free loopback port (its lifespan is
    the fixture's own, already started)."""
    server = server_of(app, keep_alive_seconds)
    serving, port = await start_serving(server)
    yield port
    server.should_exit = True
    await serving
