"""The benchmark report's load drivers against a real server on loopback.

A small threaded HTTP server of the standard library answers; the tests
check what the drivers send and count, never how fast anything is.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from benchmarks.drivers import Request, capacity, open_loop, wrk_script
from benchmarks.report import _route_of


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, str, bytes]]] = []
    hosts: ClassVar[list[str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        self.seen.append((self.command, self.path, auth, body))
        self.hosts.append(self.headers.get("Host"))
        status = 404 if self.path.startswith("/missing") else 200
        payload = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    _Recorder.hosts = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


REQUESTS = [
    Request("GET", "/api/v1/feed/home?limit=10", "token-a"),
    Request("POST", "/api/v1/posts/1/comments", "token-b", {"body": "So fluffy 😍"}),
    Request("GET", "/api/v1/tags/caf%C3%A9", "token-c"),
    Request("DELETE", "/api/v1/posts/1/like", "token-d"),
]


def test_open_loop_sends_every_request_and_counts_statuses(server: str) -> None:
    mixed = [*REQUESTS, Request("GET", "/missing")]
    result = open_loop(server, mixed, rate=100, seconds=1, server_pids=[])
    assert result.result["sent"] == 100
    assert result.result["statuses"] == {"200": 80, "404": 20}
    assert result.errors == 20
    assert len(_Recorder.seen) == 100
    methods = {(method, path) for method, path, _, _ in _Recorder.seen}
    assert ("DELETE", "/api/v1/posts/1/like") in methods
    comment = next(body for m, _, _, body in _Recorder.seen if m == "POST")
    assert json.loads(comment) == {"body": "So fluffy 😍"}
    latency = result.result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]


def test_wrk_script_escapes_what_lua_cannot_read() -> None:
    script = wrk_script([Request("GET", "/tags/café", body={"body": "😍"})])
    assert "/tags/caf\\195\\169" in script  # UTF-8 bytes, escaped for Lua
    # The body's JSON escape keeps its backslash as a byte: Lua reads no \u.
    assert "\\092ud83d" in script
    assert "\\u" not in script


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_capacity_replays_the_cycle_through_wrk(server: str) -> None:
    found = capacity(server, REQUESTS, seconds=1, server_pids=[], warmup_seconds=0)
    assert found.requests > 0
    assert found.errors == 0
    sent = {(method, path, auth) for method, path, auth, _ in _Recorder.seen}
    assert sent >= {(r.method, r.path, f"Bearer {r.token}") for r in REQUESTS}
    comments = [body for m, _, _, body in _Recorder.seen if m == "POST"]
    assert json.loads(comments[0]) == {"body": "So fluffy 😍"}
    # Every request names its host, as HTTP/1.1 requires (found when the
    # server began to refuse requests without one: wrk's requests, made as
    # its script loaded, had none).
    assert set(_Recorder.hosts) == {server.removeprefix("http://")}


def test_wrk_errors_are_counted(server: str) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    found = capacity(
        server,
        [Request("GET", "/missing")],
        seconds=1,
        server_pids=[],
        warmup_seconds=0,
    )
    assert found.errors == found.requests > 0


def test_routes_are_named_as_the_metrics_name_them() -> None:
    post = "/api/v1/posts/01M8MH377ZN0PANFN0PQZCNC2C"
    assert _route_of(post + "?x=1") == "/api/v1/posts/{post_id}"
    assert _route_of("/api/v1/accounts/user_5") == "/api/v1/accounts/{username}"
    assert _route_of("/api/v1/feed/home?limit=10") == "/api/v1/feed/home"


def test_profile_shares_group_samples_by_the_code_on_top() -> None:
    from benchmarks.profile import shares

    collapsed = "\n".join(
        [
            "main;run (uvicorn/server.py:1);get (redis/asyncio/client.py:9) 6",
            "main;run (uvicorn/server.py:1);decode (jwt/api_jwt.py:3) 2",
            "main;handle (fastapi/routing.py:2) 2",
            "worker;wait (threading.py:327) 50",
        ]
    )
    found = shares(collapsed)
    assert found == pytest.approx(
        {
            "Redis client (redis-py, our cache and timeline calls)": 0.6,
            "authentication (PyJWT, our token check)": 0.2,
            "FastAPI and Starlette (routing, dependencies)": 0.2,
        }
    )


def test_cores_by_role_never_go_negative_when_a_process_exits() -> None:
    from benchmarks.drivers import cores_between

    before = {10: ("PostgreSQL", 50.0), 11: ("PostgreSQL", 2.0), 20: ("server", 5.0)}
    after = {11: ("PostgreSQL", 3.0), 12: ("PostgreSQL", 0.5), 20: ("server", 9.0)}
    cores = cores_between(before, after, {"server": [20]}, seconds=2.0)
    assert cores["PostgreSQL"] == pytest.approx((1.0 + 0.5) / 2)  # 10 exited
    assert cores["server"] == pytest.approx(2.0)
    assert all(value >= 0 for value in cores.values())


def test_the_report_renders_every_target_with_its_verdict() -> None:
    from pathlib import Path

    from benchmarks.drivers import Capacity, OpenLoop
    from benchmarks.markdown import render
    from benchmarks.report import Endpoint, Options, Results

    def cap(per_second: float) -> Capacity:
        return Capacity(int(per_second * 10), 10.0, 0, per_second / 100, 15.0, "")

    def endpoint(name: str, per_second: float, p99: float) -> Endpoint:
        run = OpenLoop(
            rate=per_second / 2,
            result={
                "achieved_per_second": per_second / 2,
                "latency_ms": {"p50": 1.0, "p99": p99},
            },
        )
        return Endpoint(name, cap(per_second), {0.5: run}, 0.0, 1.0)

    results = Results()
    results.endpoints = {
        "B0": endpoint("B0", 40_000, 1),
        "B1": endpoint("B1", 20_000, 1),
        "full stack": endpoint("full stack", 30_000, 1),
        "home feed": endpoint("home feed", 500, 8),
        "post": endpoint("post", 1_000, 6),
        "profile": endpoint("profile", 2_000, 4),
    }
    results.freshness = {"upload_p99_ms": 25.0, "upload_measured": "≤ 25 ms"}
    options = Options(200_000, 10, 15, Path("out.md"), False, set())
    text = render(options, results, "python3 dev.py bench --users 200000")
    assert "| home feed: p99 at 50% load | ≤ 10 ms | 8.0 ms at 250/s | met |" in text
    assert "| post: p99 at 50% load | ≤ 5 ms | 6.0 ms at 500/s | **missed** |" in text
    assert "0.75 × B0" in text
    assert (
        "| photo upload: accepted, server time | p99 ≤ 50 ms | ≤ 25 ms | met |" in text
    )
    measured = text.count("| met |") + text.count("| **missed** |")
    assert f"## Targets: {text.count('| met |')} of {measured} measured met" in text


def test_the_report_says_what_limits_fan_out_from_its_measurements() -> None:
    from pathlib import Path

    from benchmarks.markdown import render
    from benchmarks.report import Options, Results

    results = Results()
    output = [
        "fan-out benchmark on the Redis: 20000 followers, 6000 with a timeline",
        f"{'':<34}{'inserts':>9}{'seconds':>9}{'inserts/s':>12}{'calls':>8}",
        f"{'fan-out (Timelines.add)':<34}{120000:>9}{2.24:>9.2f}{'53,588':>12}{800:>8}",
        f"{'baseline (plain writes)':<34}{120000:>9}{2.90:>9.2f}{'41,368':>12}{120:>8}",
        "fan-out / baseline: 1.30",
        "CPU per insert: fan-out this process 5.5 us + Redis 12.4 us; "
        "baseline this process 18.7 us + Redis 5.1 us",
        "load average: 2.1 before, 2.3 after, on 2 cores",
    ]
    results.offline = {"fan-out": "\n".join(output)}
    options = Options(200_000, 10, 15, Path("out.md"), False, set())
    text = render(options, results, "python3 dev.py bench --users 200000")
    (row,) = [line for line in text.splitlines() if line.startswith("| fan-out: t")]
    assert "53,588/s = 1.30 × plain pipelined ZADD" in row
    assert "**missed**" in row
    (limit,) = [line for line in text.splitlines() if line.startswith("- **fan-out: t")]
    assert "reach 41,368/s on this machine, itself under the target" in limit
    assert "fan-out this process 5.5 us + Redis 12.4 us" in limit
    assert "load average 2.1 to 2.3" in limit


def test_the_report_says_where_the_mix_spends_its_cpu() -> None:
    from pathlib import Path

    from benchmarks.drivers import Capacity, OpenLoop
    from benchmarks.markdown import mix_cpu_shares, render
    from benchmarks.report import Options, Results

    def alone(requests: int, server_cpu: float, wrk_cores: float) -> Capacity:
        # 10 s, the machine busy for 12 CPU seconds of which wrk took 1.
        roles = {"wrk (the load generator)": wrk_cores}
        return Capacity(requests, 10.0, 0, server_cpu, 12.0, "", roles)

    results = Results()
    # Likes are a fifth of the requests at four times a feed page's CPU.
    results.mix_shares = {"read_home_feed": 0.8, "like_or_unlike": 0.2}
    results.mix_actions = {
        "read_home_feed": alone(10_000, 10.0, 0.1),  # 1 ms a request
        "like_or_unlike": alone(2_500, 10.0, 0.1),  # 4 ms a request
    }
    results.mix_one = results.mix_two = Capacity(6_000, 10.0, 0, 12.0, 19.0, "")
    results.mix_open = OpenLoop(
        rate=300, result={"achieved_per_second": 300, "latency_ms": {"p99": 20.0}}
    )

    assert mix_cpu_shares(results) == {"like_or_unlike": 0.5, "read_home_feed": 0.5}
    results.mix_shares = {"read_home_feed": 0.9, "like_or_unlike": 0.1}
    shares = mix_cpu_shares(results)
    assert list(shares) == ["read_home_feed", "like_or_unlike"]
    assert round(shares["read_home_feed"], 3) == round(0.9 / 1.3, 3)

    options = Options(200_000, 10, 15, Path("out.md"), False, set())
    text = render(options, results, "python3 dev.py bench --users 200000")
    assert "its server CPU goes to read_home_feed 69%, like_or_unlike 31%" in text
    # The machine's CPU but wrk's: (12 - 0.1 × 10) s over 10,000 requests.
    assert "| read_home_feed | 90% | 1,000 | 1.00 | 1.10 | 69% | 0 |" in text


def test_the_report_says_how_much_more_a_request_costs_with_two_processes() -> None:
    from pathlib import Path

    from benchmarks.drivers import Capacity
    from benchmarks.markdown import render
    from benchmarks.report import Endpoint, Options, Results

    results = Results()
    # 10 s each: one process 6,000 requests on 9 CPU seconds (1.5 ms each);
    # two, 7,000 on 14 s (2 ms each, 1.4 cores). At 1.5 ms, 1.4 cores serve
    # 9,333 requests: 1.56 times one process's 6,000.
    results.mix_one = Capacity(6_000, 10.0, 0, 9.0, 12.0, "")
    results.mix_two = Capacity(7_000, 10.0, 0, 14.0, 19.0, "")
    results.endpoints["B0"] = Endpoint(
        "B0", Capacity(100_000, 10.0, 0, 6.0, 12.0, ""), {}, None, None
    )
    results.b0_two = Capacity(150_000, 10.0, 0, 12.0, 19.0, "")
    options = Options(200_000, 10, 15, Path("out.md"), False, set())
    text = render(options, results, "python3 dev.py bench --users 200000")
    assert (
        "a request of the mix took 1.50 ms of server CPU with one process and "
        "2.00 ms with two (1.33 ×): at one process's cost, the 1.40 cores the two "
        "used would have served 1.56 × one process's requests"
    ) in text
    assert (
        "B0 (a constant answered before any middleware) gains 1.50 × from a "
        "second process here, its CPU per request 0.060 → 0.080 ms"
    ) in text


def test_a_missed_latency_says_what_a_request_cost_at_that_rate() -> None:
    from benchmarks.drivers import Capacity, OpenLoop
    from benchmarks.markdown import _latency_limit
    from benchmarks.report import Endpoint

    # Saturated: 10,000 requests on 5 CPU seconds. At half of it: 5,000
    # requests sent in 10 s, on 4.5 CPU seconds (0.9 ms each, 0.45 cores).
    half = OpenLoop(
        rate=500,
        result={"sent": 5_000, "elapsed_seconds": 10.0, "latency_ms": {"p50": 2.0}},
        server_cpu_seconds=4.5,
    )
    endpoint = Endpoint("post", Capacity(10_000, 10.0, 0, 5.0, 6.0, ""), {0.5: half})
    assert _latency_limit(endpoint).startswith(
        "median 2.0 ms; the server used 0.45 cores; CPU per request 0.90 ms in "
        "this run, 0.50 ms at saturation;"
    )


def test_two_processes_against_one_is_the_median_round() -> None:
    """One pair of runs gave 1.04 × and another of the same commit 2.54 ×:
    the verdict is the median of rounds, each of one process then two."""
    from pathlib import Path

    from benchmarks.drivers import Capacity
    from benchmarks.markdown import render
    from benchmarks.report import Options, Results

    results = Results()
    results.mix_one = Capacity(6_000, 10.0, 0, 9.0, 12.0, "")
    results.mix_two = Capacity(6_000, 10.0, 0, 14.0, 19.0, "")  # 1.00 ×
    results.mix_rounds = [
        (
            Capacity(5_000, 10.0, 0, 9.0, 12.0, ""),
            Capacity(7_500, 10.0, 0, 14.0, 19.0, ""),
        ),
        (
            Capacity(4_000, 10.0, 0, 9.0, 12.0, ""),
            Capacity(12_000, 10.0, 0, 14.0, 19.0, ""),
        ),
    ]
    options = Options(200_000, 10, 15, Path("out.md"), False, set())
    text = render(options, results, "python3 dev.py bench --users 200000")
    row = next(line for line in text.splitlines() if "two server processes" in line)
    assert (
        "1.50 ×, the median of 3 rounds of one process then two (1.00, 1.50, 3.00 ×);"
        " the first (600/s → 600/s)"
    ) in row
    assert row.endswith("| met |")
    assert "| round 3: two processes | 1,200 |" in text


def test_the_mix_rounds_option_takes_a_count_of_at_least_one() -> None:
    from benchmarks.report import parse_args

    assert parse_args([]).mix_rounds == 3
    assert parse_args(["--mix-rounds", "1"]).mix_rounds == 1
    for wrong in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            parse_args(["--mix-rounds", wrong])
