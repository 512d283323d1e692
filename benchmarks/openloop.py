"""An open-loop load driver: requests sent at fixed times, whatever the answers do.

A closed-loop tool (wrk, Locust) sends a connection's next request only
after the previous answer, so a slow server slows the load down and its
stalls go unmeasured. Here the send times are fixed before the run, one
every 1/rate seconds, and each latency is counted from the time the request
was due, not from when a connection was free to send it: a request that
waits for a connection, or for this driver, is late, and its lateness is
part of its latency.

    .venv/bin/python benchmarks/openloop.py PLAN.json

The plan names the server, the arrival rate, the duration, the connection
limit and the requests to cycle through; the result, on stdout, is JSON with
the latencies' percentiles, the status counts, how late the driver itself
was at sending, and the CPU it used (if those are large, the figures
measure the driver).

The client is HTTP/1.1 keep-alive on asyncio protocols with uvloop and the
httptools parser (both are uvicorn's, already installed): a general client
such as httpx costs several times more CPU per request, which on a two-core
machine is taken from the server being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import numpy as np
import uvloop

TIMEOUT_SECONDS = 10.0
# uvloop's timers count whole milliseconds.
SHORTEST_SLEEP_SECONDS = 0.001


def percentiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1000
    points = {"p50": 50, "p90": 90, "p99": 99, "p999": 99.9}
    found = {name: float(np.percentile(array, q)) for name, q in points.items()}
    found["max"] = float(array.max())
    found["mean"] = float(array.mean())
    return found


def encode(request: dict[str, Any], host: str) -> bytes:
    body = b"" if request.get("body") is None else json.dumps(request["body"]).encode()
    lines = [f"{request['method']} {request['path']} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in request.get("headers", {}).items()]
    lines.append("Accept: application/json")
    if body:
        lines.append("Content-Type: application/json")
    if body or request["method"] in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, payload: bytes, due: float) -> None:
        assert self.transport is not None
        self.due, self.done = due, False
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.driver.failed(self, "parse error")

    def on_message_complete(self) -> None:
        self.done = True
        status = str(self.parser.get_status_code())
        keep = self.parser.should_keep_alive()
        self.driver.answered(self, status, keep)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.driver.failed(self, "connection lost")
        self.driver.forget(self)


class Driver:
    def __init__(self, plan: dict[str, Any]) -> None:
        url = urlsplit(plan["url"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.payloads = [encode(r, url.netloc) for r in plan["requests"]]
        self.rate = float(plan["rate"])
        self.total = int(self.rate * float(plan["duration"]))
        self.limit = int(plan["connections"])
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.waiting: deque[tuple[bytes, float]] = deque()
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.finished = 0
        self.start = 0.0
        # The slowest answer to a request due in each second of the run: one
        # stall shows as one bad second, a saturated server as many.
        self.slowest: dict[int, float] = {}
        self.all_done = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = self.start = time.perf_counter() + 0.2
        sent = 0
        while sent < self.total:
            now = time.perf_counter()
            due = start + sent / self.rate
            if due > now:
                # Never less than the loop's timer resolution: a shorter sleep
                # returns at once, and a driver that polls the clock like that
                # takes a core from the server it measures. The requests due
                # meanwhile go out together, each late by its own measure.
                await asyncio.sleep(max(due - now, SHORTEST_SLEEP_SECONDS))
                continue
            # Every request due by now goes out in this turn of the loop.
            while sent < self.total and start + sent / self.rate <= now:
                due = start + sent / self.rate
                self.lateness.append(now - due)
                self.dispatch(self.payloads[sent % len(self.payloads)], due, loop)
                sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), TIMEOUT_SECONDS * 2)
        self.elapsed = time.perf_counter() - start

    def dispatch(
        self, payload: bytes, due: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        if self.idle:
            self.idle.pop().send(payload, due)
        elif self.open < self.limit:
            self.open += 1
            loop.create_task(self.connect(payload, due))
        else:
            self.waiting.append((payload, due))

    async def connect(self, payload: bytes, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(self), self.host, self.port
            )
        except OSError as exc:
            self.open -= 1
            self.count(type(exc).__name__)
            return
        connection.send(payload, due)

    def answered(self, connection: Connection, status: str, keep_alive: bool) -> None:
        latency = time.perf_counter() - connection.due
        self.latencies.append(latency)
        second = int(connection.due - self.start)
        self.slowest[second] = max(self.slowest.get(second, 0.0), latency)
        self.count(status)
        if not keep_alive and connection.transport is not None:
            connection.transport.close()
            return
        self.reuse(connection)

    def reuse(self, connection: Connection) -> None:
        if self.waiting:
            payload, due = self.waiting.popleft()
            connection.send(payload, due)
        else:
            self.idle.append(connection)

    def failed(self, connection: Connection, why: str) -> None:
        connection.done = True
        self.count(why)
        if connection.transport is not None:
            connection.transport.close()

    def forget(self, connection: Connection) -> None:
        self.open -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if self.waiting:  # a request waits: a new connection takes it
            payload, due = self.waiting.popleft()
            self.open += 1
            asyncio.get_running_loop().create_task(self.connect(payload, due))

    def count(self, status: str) -> None:
        self.statuses[status] += 1
        self.finished += 1
        if self.finished >= self.total:
            self.all_done.set()

    def result(self) -> dict[str, Any]:
        ok = sum(n for status, n in self.statuses.items() if status[:1] in "23")
        return {
            "rate": self.rate,
            "sent": self.total,
            "answered_2xx_3xx": ok,
            "errors": self.total - ok,
            "statuses": dict(self.statuses),
            "elapsed_seconds": self.elapsed,
            "achieved_per_second": ok / self.elapsed if self.elapsed else 0.0,
            "latency_ms": percentiles_ms(self.latencies),
            "driver_lateness_ms": percentiles_ms(self.lateness),
            "slowest_ms_by_second": [
                round(self.slowest.get(i, 0.0) * 1000, 1)
                for i in range(max(self.slowest, default=-1) + 1)
            ],
        }


async def drive(plan: dict[str, Any]) -> dict[str, Any]:
    driver = Driver(plan)
    cpu = time.process_time()
    await driver.run()
    result = driver.result()
    result["driver_cpu_seconds"] = time.process_time() - cpu
    return result


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(uvloop.run(drive(plan))))


if __name__ == "__main__":
    main()
