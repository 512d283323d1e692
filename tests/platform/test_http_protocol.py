"""Requests the server will not read get a problem document from the server
itself: bytes that are not HTTP, heads too long, heads too slow.

A real uvicorn server on loopback, with the protocol and settings ``petpal
serve`` runs, in front of the test's app; the requests are raw bytes on a
socket, since no HTTP client sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import httpx
import orjson
import pytest
from fastapi import FastAPI

from petpal.platform import http_protocol
from petpal.platform import storage as storage_module
from petpal.platform.http_protocol import MAX_HEAD_BYTES
from petpal.platform.services import Services
from tests.factories import a_user
from tests.platform.conftest import server_of, start_serving

Answer = tuple[bytes, dict[str, str], bytes]


async def exchange(port: int, request: bytes) -> Answer:
    """Status line, headers and body of the (last) answer to ``request``."""
    return (await exchanges(port, request))[-1]


async def received(port: int, request: bytes) -> bytes:
    """Every byte the server sends for ``request`` until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


async def exchanges(port: int, request: bytes) -> list[Answer]:
    """Every answer to ``request`` until the server closes the connection."""
    stream = await received(port, request)
    answers = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers["content-length"])
        answers.append((status.encode(), headers, rest[:length]))
        stream = rest[length:]
    return answers


def assert_refused(answer: Answer, status: int, code: str, instance: str = "") -> None:
    line, headers, body = answer
    assert line.startswith(f"HTTP/1.1 {status} ".encode()), line
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert headers["cache-control"] == "no-store"
    problem = orjson.loads(body)
    assert problem == {
        "type": f"https://petpal.example/problems/{code.replace('_', '-')}",
        "title": problem["title"],
        "status": status,
        "detail": problem["detail"],
        "instance": instance,
        "code": code,
    }
    assert problem["title"]
    assert problem["detail"]


@pytest.mark.parametrize(
    ("request_bytes", "instance"),
    [
        (b"GET /healthz?a=1 HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", "/healthz"),
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
    answer = await exchange(port, request_bytes)
    assert_refused(answer, 400, "malformed_request", instance)
    assert b"HTTP/1.1" in answer[2]


async def test_a_method_the_server_does_not_know_is_not_implemented(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A well-formed method the parser does not know is a 501 (RFC 9110
    section 9.1), and each refusal is logged with the id its answer carries
    (uvicorn's own line had none)."""
    for request in (
        b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nBREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # a CRLF may lead
    ):
        answer = await exchange(port, request)
        assert_refused(answer, 501, "method_not_implemented")
    given = b"trial-refused-1"
    answer = await exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nX-Request-ID: "
        + given
        + b"\r\nX-Bad: a\x01b\r\n\r\n",
    )
    assert_refused(answer, 400, "malformed_request", "/healthz")
    assert answer[1]["x-request-id"] == given.decode()
    lines = capsys.readouterr().out.splitlines()
    refused = [line for line in lines if "request.refused" in line]
    assert [line for line in refused if "method_not_implemented" in line]
    assert [line for line in refused if given.decode() in line], refused
    assert not [line for line in lines if "Invalid HTTP request" in line]
    # Behind another request in one read, where the parser cannot say where
    # the method began: a malformed request, after the answer before it.
    answers = await exchanges(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nBREW / HTTP/1.1\r\n\r\n"
    )
    assert answers[0][0] == b"HTTP/1.1 200 OK"
    assert_refused(answers[-1], 400, "malformed_request")
    # A known method the app has no route for stays the app's 405.
    answer = await exchange(
        port, b"PROPFIND /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer[0] == b"HTTP/1.1 405 Method Not Allowed"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (
            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            b"GET /healthz HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            "http_version_not_supported",
        ),
        (
            b"GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n",
            505,
            "http_version_not_supported",
        ),
        (
            b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n",
            505,
            "http_version_not_supported",
        ),
        (
            b"GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n",
            505,
            "http_version_not_supported",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a, b\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            501,
            "method_not_implemented",
        ),
    ],
    ids=[
        "no-host",
        "two-hosts",
        "two-hosts-1.0",
        "http-2.0",
        "http-0.9",
        "http-1.2",
        "http-3.0",
        "host-list",
        "connect",
    ],
)
async def test_a_head_http_1_1_does_not_allow_is_refused(
    port: int, request_bytes: bytes, status: int, code: str
) -> None:
    """Found by a trial: each was served (RFC 9112 sections 2.3 and 3.2),
    a version other than 1.x as HTTP/1.1, and CONNECT was a 400."""
    answers = await exchanges(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + request_bytes
    )
    assert answers[0][0] == b"HTTP/1.1 200 OK"  # the request before it
    assert len(answers) == 2
    instance = "" if request_bytes.startswith(b"CONNECT") else "/healthz"
    assert_refused(answers[1], status, code, instance)
    # HTTP/1.0 needs no Host; names, addresses and ports are hosts.
    answer = await exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer[0] == b"HTTP/1.1 200 OK"
    for host in (b"petpal.example", b"127.0.0.1:8000", b"[::1]:8000", b""):
        answer = await exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: "
            + host
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert answer[0] == b"HTTP/1.1 200 OK", host


async def test_requests_before_the_bad_bytes_are_answered_first(port: int) -> None:
    """Found by a trial: a request carried out lost its answer to the 400
    of the garbage that followed it on the connection."""
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await exchanges(port, good + good + b"\x16\x03\x01garbage\r\n\r\n")
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2 + [
        b"HTTP/1.1 400 Bad Request"
    ]
    assert orjson.loads(answers[0][2]) == {"status": "ok"}
    assert_refused(answers[-1], 400, "malformed_request")


async def test_a_broken_body_queued_behind_a_request_is_refused_in_its_turn(
    port: int,
) -> None:
    """Found by a trial: the refusal of a pipelined request's broken chunked
    body went out at once, and the answer to the request before it (carried
    out) was lost."""
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    broken = (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"log\r\nZZZ\r\n\r\n'
    )
    answers = await exchanges(port, good + good + broken)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2 + [
        b"HTTP/1.1 400 Bad Request"
    ]
    assert_refused(answers[-1], 400, "malformed_request", "/api/v1/auth/token")


async def test_a_head_past_the_limit_is_refused_before_it_all_arrives(
    port: int,
) -> None:
    long_target = b"/healthz?q=" + b"a" * MAX_HEAD_BYTES
    answer = await exchange(port, b"GET " + long_target + b" HTTP/1.1\r\n\r\n")
    assert_refused(answer, 414, "uri_too_long", "/healthz")
    many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 200) for i in range(400))
    answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many)
    assert_refused(answer, 431, "headers_too_large", "/healthz")
    # Past the limit by a little, in one read (found by a trial: a head
    # that arrived whole in one chunk was not counted).
    for head in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES,
        b"GET /" + b"p" * 60 * 1024 + b" HTTP/1.1\r\nX-Big: " + b"a" * 8 * 1024,
    ):
        answer = await exchange(port, head + b"\r\n\r\n")
        assert answer[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    # Behind a request it follows on the connection: that one is answered.
    answers = await exchanges(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nX-Big: "
        + b"a" * 70 * 1024
        + b"\r\n\r\n",
    )
    assert [a[0] for a in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 431 Request Header Fields Too Large",
    ]
    # A head begun behind another request in one read, ended in the next
    # (found by a trial: counted from the second read only, and served).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70 * 1024
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(b"\r\nConnection: close\r\n\r\n")
    stream = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert stream.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 431 Request Header Fields Too Large" in stream
    # A client still sending when refused gets the refusal, not a reset
    # (its bytes are read and dropped before the connection closes).
    answer = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 4 * 1024 * 1024
    )
    assert answer[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    # Within the limit, a large head is served.
    some = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 200) for i in range(200))
    answer = await exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + some + b"Connection: close\r\n\r\n",
    )
    assert answer[0] == b"HTTP/1.1 200 OK"


async def test_a_head_that_does_not_arrive_in_time_is_refused(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT_SECONDS", 0.5)
    # Half a request, then nothing: answered, not held for ever.
    answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHo")
    assert_refused(answer, 408, "request_timeout", "/healthz")
    # A connection that never sends a byte.
    assert_refused(await exchange(port, b""), 408, "request_timeout")
    # A kept-alive connection: a whole request, then half of another.
    answers = await exchanges(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HT"
    )
    assert answers[0][0] == b"HTTP/1.1 200 OK"
    assert_refused(answers[1], 408, "request_timeout", "/healthz")
    # A head that trickles in, but in time, is served.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in (
        b"GET /healthz HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"Connection: close\r\n\r\n",
    ):
        writer.write(piece)
        await asyncio.sleep(0.1)
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("keep_alive_seconds", [0.2])
async def test_a_head_begun_behind_an_answered_request_gets_its_408(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: with the second head in the same read as the first
    request, uvicorn's keep-alive timer closed the connection after its 5 s
    without a word."""
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT_SECONDS", 1.0)
    answers = await exchanges(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HT"
    )
    assert answers[0][0] == b"HTTP/1.1 200 OK"
    assert len(answers) == 2, answers
    assert_refused(answers[1], 408, "request_timeout", "/healthz")


async def test_a_body_that_stops_arriving_is_refused(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "BODY_IDLE_SECONDS", 0.5)
    head = (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )
    body = b'{"login": "nobody", "password": "not-the-password"}'
    # Four bytes of the body, then nothing: answered, not held for ever.
    answer = await exchange(port, head % len(body) + body[:4])
    assert_refused(answer, 408, "request_timeout", "/api/v1/auth/token")
    # A body that trickles in, but never stops for long, is served.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head % len(body))
    for start in range(0, len(body), 10):
        writer.write(body[start : start + 10])
        await asyncio.sleep(0.2)
    answer_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
    writer.close()
    assert answer_bytes.startswith(b"HTTP/1.1 401"), answer_bytes


async def test_an_upgrade_request_never_smuggles_what_follows_it(port: int) -> None:
    """Found by a trial: the parser stops at an upgrade request's head, so
    its declared body was read as a request of its own, and ran (a hidden
    sign-up). One with a body is refused; one without is answered, and
    nothing after it on the connection is read."""
    account = orjson.dumps(
        {
            "username": "smuggled",
            "email": "smuggled@example.com",
            "password": "a long enough password",
            "display_name": "Smuggled",
        }
    )
    smuggled = (
        b"POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(account), account)
    )
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    )
    answers = await exchanges(
        port, upgrade + b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled
    )
    assert len(answers) == 1
    assert_refused(answers[0], 400, "upgrade_not_supported", "/healthz")
    answers = await exchanges(port, upgrade + b"\r\n" + smuggled)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"]
    lookup = await exchange(
        port,
        b"GET /api/v1/accounts/smuggled HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert lookup[0] == b"HTTP/1.1 404 Not Found"


async def test_bad_bytes_followed_by_many_more_are_malformed_not_too_large(
    port: int,
) -> None:
    """Found by a trial: garbage with over 64 KiB behind it in the same read
    was called a head too large."""
    answer = await exchange(port, b"\x00garbage\r\n\r\n" + b"y" * 70 * 1024)
    assert_refused(answer, 400, "malformed_request")


async def test_an_upgrade_request_is_served_as_http(port: int) -> None:
    """No route speaks WebSocket: a handshake was refused in plain text."""
    status, _, body = await exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(body) == {"status": "ok"}


async def test_well_formed_requests_are_served_as_before(port: int) -> None:
    status, headers, body = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(body) == {"status": "ok"}
    assert headers["x-request-id"]


async def test_head_is_a_get_without_the_content(
    port: int, client: httpx.AsyncClient
) -> None:
    """RFC 9110 section 9.3.2. Found by a trial: every API route answered HEAD
    with 405. The answer after it on the same connection shows the server
    sent the headers and not one byte of content."""
    user = await a_user(client)
    asked = {
        f"/api/v1/accounts/{user.username}": 200,
        "/api/v1/accounts/nobody_here": 404,
        "/api/v1/feed/public?limit=5": 200,
        "/api/v1/pets/of-the-day": 404,
    }
    for path, status in asked.items():
        get = await client.get(path)
        assert get.status_code == status, path
        stream = await received(
            port,
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        head, _, rest = stream.partition(b"\r\n\r\n")
        line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(h.lower().split(": ", 1) for h in lines)
        assert line.startswith(f"HTTP/1.1 {status} "), (path, line)
        assert headers["content-type"] == get.headers["content-type"], path
        assert int(headers["content-length"]) == len(get.content), path
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), (path, rest[:80])
        assert rest.endswith(b'{"status":"ok"}'), path


async def test_head_where_no_get_is_a_405_naming_the_methods(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.head("/api/v1/auth/token")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    # A path with a GET names HEAD beside it.
    answer = await client.put("/api/v1/accounts/me")
    assert answer.headers["allow"] == "DELETE, GET, HEAD, PATCH"


async def test_a_bug_is_a_500_problem_and_the_connection_goes_on(
    port: int,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a trial: Starlette's last-resort handler answered and then
    raised again, so uvicorn dropped the connection (the request pipelined
    behind went unanswered), and neither the answer nor the log line had
    the request id."""
    user = await a_user(client)

    async def broken(*args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr("petpal.identity.service.resolve_username", broken)
    answers = await exchanges(
        port,
        f"GET /api/v1/accounts/{user.username} HTTP/1.1\r\nHost: x\r\n"
        "X-Request-ID: bug-42\r\n\r\n".encode()
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert len(answers) == 2, answers
    (line, headers, body), healthz = answers
    assert line.startswith(b"HTTP/1.1 500 "), line
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-request-id"] == "bug-42"
    assert orjson.loads(body)["code"] == "internal_error"
    assert healthz[0] == b"HTTP/1.1 200 OK"
    out = capsys.readouterr().out
    logged = [line for line in out.splitlines() if "unhandled_error" in line]
    assert len(logged) == 1, out
    assert "bug-42" in logged[0]
    assert "RuntimeError: a bug" in out  # with its traceback


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
        (b"HEAD /" + b"a" * (MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\n\r\n", 414),
        (
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"b" * (MAX_HEAD_BYTES + 10)
            + b"\r\n\r\n",
            431,
        ),
        (
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 2\r\n\r\nhi",
            400,
        ),
    ],
    ids=["malformed", "uri-too-long", "headers-too-large", "upgrade-with-body"],
)
async def test_a_refused_head_request_gets_the_headers_alone(
    port: int, request_bytes: bytes, status: int
) -> None:
    """Found by a trial: the server's own refusals sent a HEAD the problem
    document too."""
    stream = await received(port, request_bytes)
    head, _, rest = stream.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"content-type: application/problem+json" in head
    assert int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) > 0
    assert rest == b""


async def test_an_answer_that_fails_midway_is_cut_off_and_logged_once(
    port: int,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A photo shortened while it was served left the connection open for
    ever (found by a trial), and the error was then logged twice, once
    without the request id."""
    if services.settings.storage_url:
        pytest.skip("the file is truncated on the local disk")
    monkeypatch.setattr(storage_module, "STREAM_CHUNK_SECONDS", 0.5)
    key = "media/" + "C" * 26 + "/large.jpg"
    size = 40 * 1024 * 1024
    await services.storage.put(key, os.urandom(size), "image/jpeg")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /media-files/{key} HTTP/1.1\r\nHost: x\r\n"
            "X-Request-ID: cut-7\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert f"content-length: {size}".encode() in head
        await asyncio.wait_for(reader.readexactly(1024 * 1024), timeout=10)
        os.truncate(services.settings.media_dir / key, 1024 * 1024)
        rest = await asyncio.wait_for(reader.read(), timeout=10)  # closed
    finally:
        writer.close()
    assert 1024 * 1024 + len(rest) < size
    out = capsys.readouterr()
    logged = [line for line in out.out.splitlines() if "failed_mid_answer" in line]
    assert len(logged) == 1, out.out
    assert "cut-7" in logged[0]
    assert "Exception in ASGI application" not in out.out + out.err


async def test_a_refusal_carries_the_callers_request_id(port: int) -> None:
    """Found by a trial: refusals always made an id of their own."""
    head = b"GET /healthz HTTP/1.1\r\nX-Request-ID: %s\r\nHost: x\r\nno colon\r\n\r\n"
    _, headers, _ = await exchange(port, head % b"mine-1")
    assert headers["x-request-id"] == "mine-1"
    # One that is not an id we keep is replaced, as the app replaces it.
    _, headers, _ = await exchange(port, head % (b"x" * 65))
    assert len(headers["x-request-id"]) == 16


# A short keep-alive: the third trial found uvicorn's keep-alive timer
# closing the lingering connection after its 5 s.
@pytest.mark.parametrize("keep_alive_seconds", [0.2])
async def test_an_answer_before_the_body_is_read_by_a_client_still_sending(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: an upload answered before its body was all there
    (a 413 here; a 401 for an expired token alike) reset the connection,
    and a client that sends its whole body before reading, as Python's
    http.client and requests do, got the reset instead of the answer. The
    connection now lingers while the client goes on sending, even past the
    quiet time it waits for."""
    monkeypatch.setattr(http_protocol, "LINGER_SECONDS", 0.3)
    size = 4 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /api/v1/pets HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        sent = 0
        while sent < size:  # about 1.6 s, past the linger's quiet time
            writer.write(b" " * 64 * 1024)
            await writer.drain()
            sent += 64 * 1024
            await asyncio.sleep(0.025)
        stream = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = stream.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert orjson.loads(body)["code"] == "body_too_large"


async def test_a_lingering_connection_does_not_hold_up_a_shutdown(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: a server stopping waited up to 30 s for a client
    that went on sending a body it had already answered."""
    monkeypatch.setattr(http_protocol, "LINGER_MAX_SECONDS", 60.0)
    server = server_of(app)
    serving, port = await start_serving(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # An upload without a token: a 401 on a connection kept alive, its body
    # still coming.
    writer.write(
        b"POST /api/v1/media HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 20000000\r\n\r\n"
    )

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(b" " * 64 * 1024)
                await writer.drain()
                await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 401 "), head
        await asyncio.sleep(0.5)  # the client still sending
        started = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=20)
        assert time.monotonic() - started < 3
    finally:
        sending.cancel()
        writer.close()


@pytest.mark.parametrize("keep_alive_seconds", [0.3])
async def test_a_connection_answered_before_its_body_is_timed_when_idle(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: once a body that was answered early stopped coming,
    or came whole, nothing timed the connection, and it stayed open."""
    monkeypatch.setattr(http_protocol, "BODY_IDLE_SECONDS", 0.5)
    # Stops coming: closed once the body has been idle its time.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/v1/media HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 20000000\r\n\r\n" + b"z" * 100_000
    )
    stream = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert stream.startswith(b"HTTP/1.1 401 "), stream[:100]
    # Came whole after its answer, kept alive: timed as an idle connection.
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    stream = await asyncio.wait_for(
        received(
            port,
            b"POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 3
            + b"0\r\n\r\n",
        ),
        timeout=5,
    )
    assert stream.startswith(b"HTTP/1.1 413 "), stream[:100]


def _log_in_expecting_continue(version: bytes) -> bytes:
    """The head of a log-in whose two-byte body waits for a 100 Continue."""
    return (
        b"POST /api/v1/auth/token HTTP/" + version + b"\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )


def _content_length(head: bytes) -> int:
    return int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )


async def test_an_answer_to_a_request_still_waiting_for_100_continue_closes(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: an upload sent with ``Expect: 100-continue`` and
    answered 401 was kept alive without its body. A client that, having its
    answer, never sends the body (as RFC 9110 lets it) then had its next
    request read as that body, and waited for an answer that never came.
    An answer to a request whose body was never asked for now says
    ``Connection: close`` (RFC 9110 section 10.1.1), and the connection
    closes once the client stops sending."""
    monkeypatch.setattr(http_protocol, "LINGER_SECONDS", 0.3)
    upload = (
        b"POST /api/v1/media HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Expect: 100-continue\r\nContent-Length: 300\r\n\r\n"
    )
    next_request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upload)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b"\r\nconnection: close\r\n" in head.lower()
        assert b"100 continue" not in head.lower()
        # The client sends its next request instead of the body: it is
        # never read as the upload's body, nor answered as a request.
        with contextlib.suppress(OSError):
            writer.write(next_request)
            await writer.drain()
        rest = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    length = _content_length(head)
    assert len(rest) == length  # the 401's body, and then the close
    # The same upload, its body sent without waiting (RFC 9110 allows it):
    # the answer and the close are the same, the body read and dropped.
    stream = await received(port, upload + b"x" * 300)
    assert stream.startswith(b"HTTP/1.1 401 "), stream[:100]
    assert b"\r\nconnection: close\r\n" in stream.lower()
    # A request whose body the app asks for is unchanged: 100 Continue,
    # then the answer, and the connection stays open for the next one.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_log_in_expecting_continue(b"1.1"))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}" + next_request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 422 "), head
        assert b"connection: close" not in head.lower()
        length = _content_length(head)
        await reader.readexactly(length)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        writer.close()


def _answers(metrics: str, route: str, status: int) -> float:
    """How many answers of ``status`` the metrics count for POST ``route``
    (the registry is the process's: other tests' answers are in it too)."""
    line = (
        "petpal_http_request_duration_seconds_count"
        f'{{method="POST",route="{route}",status="{status}"}} '
    )
    rows = metrics.splitlines()
    return next((float(r[len(line) :]) for r in rows if r.startswith(line)), 0.0)


async def _hang_up_mid_body(
    client: httpx.AsyncClient, port: int, route: str, head: bytes, part: bytes
) -> dict[int, float]:
    """Send ``head`` and ``part`` of the body it declares, close the
    connection, and wait until the server has counted the request as a 499;
    how many more answers of each status there were meanwhile."""
    statuses = (400, 499, 500)
    before = (await client.get("/metrics")).text
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + part)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    added: dict[int, float] = {}
    for _ in range(50):  # the server sees the close in a moment
        after = (await client.get("/metrics")).text
        added = {
            status: _answers(after, route, status) - _answers(before, route, status)
            for status in statuses
        }
        if added[499]:
            break
        await asyncio.sleep(0.1)
    return added


async def test_a_client_gone_mid_upload_is_no_server_error(
    client: httpx.AsyncClient, port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a trial: a client that closed its connection halfway through
    an upload was logged as an unhandled error with a traceback and counted
    as a 500. It is logged as a body not received, counted as 499."""
    user = await a_user(client)
    added = await _hang_up_mid_body(
        client,
        port,
        "/api/v1/media",
        b"POST /api/v1/media HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: {user.headers['Authorization']}\r\n".encode()
        + b"X-Request-ID: gone-3\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * 20_000,
    )
    assert added == {400: 0, 499: 1, 500: 0}
    # Logged at level info, below the tests' level; an error would show.
    out = capsys.readouterr()
    assert "unhandled_error" not in out.out + out.err
    assert "Traceback" not in out.out + out.err


async def test_a_client_gone_mid_json_body_is_no_bad_request(
    client: httpx.AsyncClient, port: int
) -> None:
    """Found by a trial: a JSON body its client stopped sending halfway was
    counted as a 400, a bad request, where an upload's was a 499: FastAPI
    turns the disconnect into its "error parsing the body"."""
    user = await a_user(client)
    added = await _hang_up_mid_body(
        client,
        port,
        "/api/v1/posts",
        b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: {user.headers['Authorization']}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
        b'{"caption": "' + b"a" * 1000,
    )
    assert added == {400: 0, 499: 1, 500: 0}


async def test_an_expectation_without_a_body_or_in_http_1_0_is_ignored(
    port: int,
) -> None:
    """Found by a trial: a GET sent with ``Expect: 100-continue`` and no
    body was answered with ``Connection: close``, and the request pipelined
    behind it was lost; an HTTP/1.0 request's expectation got a 100, which
    RFC 9110 says must be ignored."""
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
    answers = await asyncio.wait_for(
        exchanges(port, get + get.replace(b"Expect", b"Connection: close\r\nX")),
        timeout=10,
    )
    assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert "connection" not in answers[0][1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_log_in_expecting_continue(b"1.0"))
        await writer.drain()
        with pytest.raises(TimeoutError):  # no 100 Continue: the body is awaited
            await asyncio.wait_for(reader.read(1), timeout=0.5)
        writer.write(b"{}")
        stream = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert stream.startswith(b"HTTP/1.1 422 "), stream[:100]
