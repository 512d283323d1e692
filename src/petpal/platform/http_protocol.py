"""What the server answers to bytes that are not an HTTP request it will read.

Uvicorn's httptools protocol, with five things of ours:

- A request it cannot parse (a header line without a colon, a method or
  header with characters HTTP does not allow, a path that is not ASCII, a
  broken chunked body, TLS sent to the plain port) got a plain-text
  ``Invalid HTTP request received.``, and a log line without the request's
  id; every other error of the API is an RFC 9457 problem document, and
  clients read them one way. It is now a 400 problem (code
  ``malformed_request``); a well-formed method the parser does not know
  (``BREW``) is a 501 (``method_not_implemented``), as RFC 9110 section 9.1
  asks, and so is ``CONNECT``. A head the parser takes but HTTP/1.1 does
  not (an HTTP/1.1 request without ``Host``, two ``Host`` headers, a version
  other than 1.0 and 1.1) is refused too (``_refusal_of_head``). Every
  refusal is logged (``request.refused``) with the id its answer carries.
- A request line and headers have at most ``MAX_HEAD_BYTES`` between them
  (414 ``uri_too_long`` when the target alone is past it, else 431
  ``headers_too_large``). Without a limit, one client streaming a header of
  150 MB held the event loop, and every other client waited seconds.
- A request's line and headers must all have arrived within
  ``HEAD_TIMEOUT_SECONDS`` of its first byte, and a new connection must send
  one that soon; a body the app waits for may not stop arriving for
  ``BODY_IDLE_SECONDS`` (408 ``request_timeout``, both): a client that sends
  half a request and waits no longer holds its connection for ever.
- The server never switches protocols, and its parser reads nothing after
  a request that asks to: such a request with a body is refused (400
  ``upgrade_not_supported``), and one without is answered as HTTP and its
  connection closed, so nothing behind it is read as a request of its own.
- A request that sent ``Expect: 100-continue`` and is answered before its
  body was asked for gets ``Connection: close``: its client may never send
  that body, and the next request would be read as it. The expectation of
  a request without a body, or of an HTTP/1.0 one, is ignored.

Each refusal closes the connection, as uvicorn's did, once the client has
stopped sending or after ``LINGER_SECONDS``; nothing more is read from it.
Requests that arrived whole before the bad bytes are answered first, in
order, and the refusal after them: a client never loses the answer to a
request the server carried out.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from typing import Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from petpal.platform.errors import PROBLEM_MEDIA_TYPE, problem_document
from petpal.platform.observability import request_id_for

log = structlog.get_logger(__name__)

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 20.0
BODY_IDLE_SECONDS = 20.0
# A closing connection whose client is still sending is read (and what it
# sends dropped) until the client has been silent this long, or at most
# LINGER_MAX_SECONDS.
LINGER_SECONDS = 2.0
LINGER_MAX_SECONDS = 30.0

_MALFORMED = (
    400,
    "malformed_request",
    "the request could not be read as HTTP/1.1: its request line, a header "
    "or its chunked body is malformed",
)
_METHOD_NOT_IMPLEMENTED = (
    501,
    "method_not_implemented",
    "the request's method is not one this server implements",
)
_VERSION_NOT_SUPPORTED = (
    505,
    "http_version_not_supported",
    "this server speaks HTTP/1.1 and HTTP/1.0 on this port; the request line "
    "asks for another version",
)
_BAD_HOST = (
    400,
    "malformed_request",
    "an HTTP/1.1 request needs exactly one Host header, and any request at most "
    "one, naming one host",
)
# A Host header's value: a host as RFC 3986 spells one (a name, an IPv4
# address or an IP literal in brackets), and a port; or nothing at all.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+;=]*)(:[0-9]*)?")
_URI_TOO_LONG = (
    414,
    "uri_too_long",
    f"the request target is longer than {MAX_HEAD_BYTES} bytes",
)
_HEADERS_TOO_LARGE = (
    431,
    "headers_too_large",
    f"the request line and headers are longer than {MAX_HEAD_BYTES} bytes",
)
_TOO_SLOW = (
    408,
    "request_timeout",
    f"the request line and headers did not arrive within "
    f"{HEAD_TIMEOUT_SECONDS:g} seconds",
)
_BODY_TOO_SLOW = (
    408,
    "request_timeout",
    f"the request body stopped arriving for {BODY_IDLE_SECONDS:g} seconds",
)
_UPGRADE_WITH_BODY = (
    400,
    "upgrade_not_supported",
    "this server does not switch protocols; send the request without "
    "Connection: upgrade",
)
Refusal = tuple[int, str, str]
# What a parsed head no longer holds, counted back when it is measured: about
# the method, the two spaces, the version and the line end of the request
# line (``GET  HTTP/1.1\r\n`` is 15 bytes), and ": " and the line end of
# each header.
_REQUEST_LINE_FRAMING = 16
_HEADER_FRAMING = len(": \r\n")
# A method as RFC 9110 spells one (a token), then the space before the target.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


class _HeadRefusedError(Exception):
    """Raised in a parser callback to stop parsing a refused head."""


class _LingeringTransport:
    """A connection's transport whose ``close`` lingers while the client is
    still sending the request's body.

    Uvicorn closes a connection as soon as an answer that ends it is sent,
    and an app may answer an upload before its body is all there (a 401
    for an expired token, a 413). Found by a trial: a client that was
    still sending, as most libraries do before they read (Python's
    ``http.client``, ``requests``), got a reset instead of the answer.
    """

    def __init__(self, protocol: ProblemHttpToolsProtocol, transport: Any) -> None:
        self._protocol = protocol
        self._transport = transport
        # Every answer's writes: bound here, not looked up on each call.
        self.write = transport.write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        # Lingering is closing: uvicorn then starts no request queued behind
        # (its answer could not be sent; found by a trial) and arms no
        # keep-alive timer, which closed the connection after 5 s.
        return self._protocol._lingering or self._transport.is_closing()

    def close(self) -> None:
        self._protocol._close()


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, with the refusals above as problems."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw_transport: Any = transport
        # Closing, but still reading what the client sends (``_linger``).
        self._lingering = False
        self._shutting_down = False
        self._linger_since = self._lingered_at = 0.0
        super().connection_made(_LingeringTransport(self, transport))  # type: ignore[arg-type]
        # Bytes of the current request's head received so far (None: between
        # requests): at least (every byte counted is the head's) and at most
        # (the chunk it began in counted whole, though the request before
        # may have taken part of it). And which request that is.
        self._head_bytes: int | None = 0
        self._head_at_most = 0
        self._message = 0
        self._chunk = 0  # the size of the chunk being parsed
        self._refusal: Refusal | None = None
        # A request queued behind others whose own body broke: it is never
        # run, and the refusal is sent in its turn.
        self._refused_cycle: object | None = None
        # Set by a request to switch protocols: nothing after it is read.
        self._upgrade_asked = False
        # The method of the request being received, once its line is read.
        self._method: bytes | None = None
        # One timer watches the connection's head, or its body, at a time.
        self._timer: asyncio.TimerHandle | None = None
        self._head_since = 0.0
        self._body_at = 0.0
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered_at = self.loop.time()
            return  # read and dropped: the connection is closing
        if self._refusal is not None or self._upgrade_asked:
            return  # nothing more is read from this connection
        # Idle: every request so far was received whole.
        idle = self.cycle is None or not self.cycle.more_body
        message = self._message
        self._chunk = len(data)
        # No head on its way either: the first request in ``data`` begins it.
        self._feed(data, message if idle and not self._head_bytes else None)
        if self._head_bytes is None or self._refusal is not None:
            return
        # The chunk is all this head's if the head began before it, or began
        # it (the requests before were whole). One that began after the end
        # of another request's body in the chunk is counted from the next
        # chunk, since where it began is not known: such a head may pass the
        # limit by one chunk, never by more.
        if self._message == message or (idle and self._message == message + 1):
            self._head_bytes += len(data)
        self._head_at_most += len(data)
        refusal = self._too_long()
        if refusal is not None:
            self._refuse(refusal)

    def _feed(self, data: bytes, begins_after: int | None) -> None:
        """Uvicorn's ``data_received``, with its refusal of what does not
        parse told apart (and logged by ``_write_refusal``, with an id).

        ``begins_after``: the number of the request before the one ``data``
        begins with, if it begins one.
        """
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError:
            # The parser says the same of ``G@T`` and of ``BREW``; a method
            # it read from the start of ``data`` tells them apart (one that
            # came behind another request, or split over two reads, stays a
            # malformed request: a 400 either way, only less precise).
            at_start = begins_after is not None and self._message == begins_after + 1
            if at_start and _METHOD.match(data.lstrip(b"\r\n")):
                self._refuse(_METHOD_NOT_IMPLEMENTED)
            else:
                self._refuse(_MALFORMED)
        except httptools.HttpParserError as exc:
            # The parser gives up on a head too long for it too (a target
            # past 64 KiB): that is the limit's refusal, not a malformed one.
            # A version it does not read (HTTP/1.2, HTTP/3.0) is one this
            # server does not speak, as HTTP/2.0 is (_refusal_of_head).
            version = "Invalid HTTP version" in str(exc)
            self._refuse(
                self._too_long() or (_VERSION_NOT_SUPPORTED if version else _MALFORMED)
            )
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _too_long(self) -> Refusal | None:
        """The refusal for a head known to be past the limit.

        The target is looked at even once the head is complete: uvicorn
        parses it then, and fails past 65,535 bytes."""
        if len(getattr(self, "url", b"")) > MAX_HEAD_BYTES:
            return _URI_TOO_LONG
        if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES:
            return _HEADERS_TOO_LARGE
        return None

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._method = self.parser.get_method()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._method = None
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and not self.pipeline
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            # The answer went before the body had all come (an early 413 or
            # 401), and the body's bytes stopped uvicorn's keep-alive timer:
            # the connection is idle now, and timed as any idle one (found
            # by a trial: it stayed open for ever).
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message += 1
        if self._head_bytes is None:
            # A later request on a kept-alive connection; the first one's
            # time runs from the connection's start.
            self._start_head_timer()
        self._head_bytes = 0
        self._head_at_most = 0

    def on_headers_complete(self) -> None:
        if self._head_at_most + self._chunk > MAX_HEAD_BYTES:
            # The head may be past the limit (it came in one read, or began
            # in a read behind another request: both found by trials): it
            # is measured as parsed, with its request line and framing.
            size = (
                len(self.url)
                + _REQUEST_LINE_FRAMING
                + sum(len(n) + len(v) + _HEADER_FRAMING for n, v in self.headers)
            )
            if size > MAX_HEAD_BYTES:
                self._refuse(self._too_long() or _HEADERS_TOO_LARGE)
                # Stops the parser: no request is made of this head, and
                # nothing after it is read.
                raise _HeadRefusedError
        refusal = self._refusal_of_head()
        if refusal is not None:
            self._refuse(refusal)
            raise _HeadRefusedError
        if self.parser.should_upgrade():
            self._no_upgrade()
        self._head_bytes = None
        if self.expect_100_continue and not self._continue_applies():
            self.expect_100_continue = False
        super().on_headers_complete()
        if self._upgrade_asked:
            # Answered as HTTP, then closed: the parser reads nothing after
            # an upgrade request, and what followed it must not be read as
            # requests of their own.
            self.cycle.keep_alive = False
        if self.expect_100_continue:
            _close_if_answered_before_continue(self.cycle)

    def _refusal_of_head(self) -> Refusal | None:
        """What a head the parser took is refused for, as RFC 9112 asks.

        llhttp reads ``HTTP/2.0`` and ``HTTP/0.9`` in a request line, which
        uvicorn then answered as HTTP/1.1: a 505. ``CONNECT`` asks for a
        tunnel, which this server never opens: a 501, as for any method it
        does not implement (it was a 400, after the parser stopped at its
        head as at an upgrade's). A request with two ``Host`` headers, or an
        HTTP/1.1 one with none, is a 400 (RFC 9112 section 3.2: it was
        served, found by a trial).
        """
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            return _VERSION_NOT_SUPPORTED
        if self._method == b"CONNECT":
            return _METHOD_NOT_IMPLEMENTED
        hosts = [value for name, value in self.headers if name == b"host"]
        if len(hosts) > 1 or (not hosts and version == "1.1"):
            return _BAD_HOST
        if hosts and not _HOST.fullmatch(hosts[0]):
            return _BAD_HOST  # a list ("a, b"), spaces: not one host
        return None

    def _continue_applies(self) -> bool:
        """Whether this request's ``Expect: 100-continue`` means anything.

        An HTTP/1.0 request's expectation is ignored (RFC 9110 section
        10.1.1: it MUST be), and a request without a body has nothing to
        hold back: neither gets a 100, nor has its connection closed for it
        (found by a trial, which lost a request pipelined behind one).
        """
        return self.parser.get_http_version() != "1.0" and self._declares_body()

    def _declares_body(self) -> bool:
        """Whether the head just read says a body follows it."""
        for name, value in self.headers:
            if name == b"transfer-encoding":
                return True
            if name == b"content-length" and value.strip() not in (b"", b"0"):
                return True
        return False

    def _no_upgrade(self) -> None:
        """A request asking to switch protocols, which this server never does.

        llhttp stops parsing at the end of its head: a body it declared
        would be read as a request of its own (a trial smuggled a sign-up
        through one). One with a body is refused; one without is answered,
        and the connection closed after it."""
        self._upgrade_asked = True
        if self._declares_body():
            self._refuse(_UPGRADE_WITH_BODY)
            raise _HeadRefusedError

    def _unsupported_upgrade_warning(self) -> None:
        pass  # handled: _no_upgrade
        # The body, if one is to come, is timed from here.
        self._body_at = self.loop.time()
        self._arm()

    def on_body(self, body: bytes) -> None:
        self._body_at = self.loop.time()
        super().on_body(body)

    def shutdown(self) -> None:
        # The server is stopping: a lingering connection waits no more (it
        # held a shutdown up to LINGER_MAX_SECONDS; found by a trial).
        self._shutting_down = True
        if self._lingering:
            self._raw_transport.close()
            return
        super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        # Uvicorn arms its keep-alive timer once the last answer is sent,
        # even when the next request's head has begun (in the same read as
        # the one before): that head's own timer decides, and a head that
        # does not come whole gets its 408 (found by a trial: the
        # connection was closed after 5 s without a word).
        if self._head_bytes is None:  # no head begun since the answer
            super().timeout_keep_alive_handler()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and self._answered_all():
            self._write_refusal(self._refusal)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` and close, after the requests read before it."""
        if self._refusal is not None or self.transport.is_closing():
            return
        self._refusal = refusal
        self._stop_timer()
        self.flow.pause_reading()
        if self._answered_all():
            self._write_refusal(refusal)
        elif self.cycle.more_body:
            # The request being read is itself cut short (its body is what
            # did not parse): it cannot be carried out.
            if any(cycle is self.cycle for cycle, _ in self.pipeline):
                # Queued behind others (found by a trial: it was answered
                # at once, and the answers before it were lost).
                self._refused_cycle = self.cycle
            else:
                # Being answered: the app is told its client is gone, and
                # the refusal is the answer, unless the app began its own.
                self.cycle.disconnected = True
                if self.cycle.response_started:
                    self.transport.close()
                else:
                    self._write_refusal(refusal)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if cycle is self._refused_cycle and self._refusal is not None:
            self._write_refusal(self._refusal)  # its turn: the refusal
            return
        super()._start_asgi_task(cycle, app)

    def _answered_all(self) -> bool:
        return not self.pipeline and (
            self.cycle is None or self.cycle.response_complete
        )

    def _refused_request_id(self) -> bytes:
        given = None
        if self._method is not None:  # a request was being received
            given = next((v for n, v in self.headers if n == b"x-request-id"), None)
        return request_id_for(given)

    def _write_refusal(self, refusal: Refusal) -> None:
        if self.transport.is_closing():
            return
        status, code, detail = refusal
        path = _path_of(getattr(self, "url", b""))
        request_id = self._refused_request_id()
        # At uvicorn's level for a malformed request, which it logged without
        # the id its client was given; and for every refusal.
        log.warning(
            "request.refused",
            status=status,
            code=code,
            path=path,
            request_id=request_id.decode(),
        )
        body = problem_document(status, code, detail, path)
        content = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            # As every answer of the app has one (observability.py): the
            # caller's own, if the refused request's head had sent it.
            b"x-request-id: " + request_id + b"\r\n",
            # As the app's answers under /api/ say (observability.py): an
            # error is no answer for a cache to keep (found by a trial).
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
            # A HEAD's answer is the headers alone (found by a trial).
            b"" if self._method == b"HEAD" else body,
        ]
        self.transport.write(b"".join(content))
        self._linger()

    def _close(self) -> None:
        """Every close of the connection, uvicorn's included: lingering if
        the request being read has more of its body to come."""
        still_sending = self.cycle is not None and self.cycle.more_body
        if self._lingering or self._shutting_down or not still_sending:
            self._raw_transport.close()
        else:
            self._linger()

    def _linger(self) -> None:
        """Close, letting a client that is still sending read our answer.

        Closing with the client's bytes unread resets the connection, and a
        client still sending could lose the answer to the reset (seen in a
        trial). So the answer ends our half, what still comes is read and
        dropped (data_received), and the connection is closed when the
        client closes its half, or has been silent for ``LINGER_SECONDS``.
        """
        raw = self._raw_transport
        if self._lingering or raw.is_closing():
            return
        self._lingering = True
        if not raw.can_write_eof():
            raw.close()
            return
        raw.write_eof()
        self.flow.resume_reading()
        self._stop_timer()
        self._linger_since = self._lingered_at = self.loop.time()
        self._timer = self.loop.call_later(LINGER_SECONDS, self._check_linger)

    def _check_linger(self) -> None:
        # Re-armed rather than moved on each read, as the other timers are.
        now = self.loop.time()
        left = min(
            self._lingered_at + LINGER_SECONDS - now,
            self._linger_since + LINGER_MAX_SECONDS - now,
        )
        if left <= 0:
            self._timer = None
            self._raw_transport.close()
        else:
            self._timer = self.loop.call_later(left, self._check_linger)

    def _start_head_timer(self) -> None:
        """Time the head that begins now."""
        self._head_since = self.loop.time()
        self._arm()

    def _arm(self) -> None:
        """One timer a connection, armed only when none is: on a busy
        kept-alive connection it fires once in a while, not once a request."""
        if self._timer is None:
            self._timer = self.loop.call_later(
                min(HEAD_TIMEOUT_SECONDS, BODY_IDLE_SECONDS), self._check_progress
            )

    def _check_progress(self) -> None:
        self._timer = None
        if self._refusal is not None:
            return
        now = self.loop.time()
        cycle = self.cycle
        if self._head_bytes is not None:  # a head on its way
            left, refusal = self._head_since + HEAD_TIMEOUT_SECONDS - now, _TOO_SLOW
        elif cycle is not None and cycle.more_body:
            if cycle.response_complete:
                # Answered before its body came; the rest of it is read and
                # dropped. One that stops coming is closed without a word
                # (found by a trial: it held the connection for ever).
                if now - self._body_at >= BODY_IDLE_SECONDS:
                    self._raw_transport.close()
                    return
            elif self.flow.read_paused or cycle.waiting_for_100_continue:
                # The app has not read what came, or not yet asked for the
                # body a client holds back until it does: the wait is ours.
                self._body_at = now
            left, refusal = self._body_at + BODY_IDLE_SECONDS - now, _BODY_TOO_SLOW
        else:
            return  # nothing on its way: the next head arms the timer again
        if left > 0:
            self._timer = self.loop.call_later(left, self._check_progress)
        else:
            self._refuse(refusal)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _close_if_answered_before_continue(cycle: Any) -> None:
    """An answer to ``cycle`` before its body was asked for closes the connection.

    A client that sent ``Expect: 100-continue`` holds its body back until
    it gets the 100, which uvicorn sends when the app first reads the body.
    Answered without it (a 401 to an upload), the client may send the body
    or not (RFC 9110 section 10.1.1), so the server cannot tell where the
    next request would begin: found by a trial, the next request was read
    as the body, and never answered. The answer says ``Connection: close``,
    as the RFC asks, and the close lingers until the client stops sending
    (``_close``). Only such requests pay for the wrapper.
    """
    send = cycle.send

    async def send_closing(message: Any) -> None:
        if message["type"] == "http.response.start" and cycle.waiting_for_100_continue:
            cycle.keep_alive = False  # uvicorn adds the header, and closes
        await send(message)

    cycle.send = send_closing


def _path_of(target: bytes) -> str:
    """The path of a request target, as the app's problems give it; empty
    unless it is a path (not ``CONNECT``'s ``host:port``, not ``*``) of plain
    printable ASCII."""
    path = target.split(b"?", 1)[0]
    if path[:1] == b"/" and len(path) <= 2048 and all(32 < b < 127 for b in path):
        return path.decode()
    return ""
