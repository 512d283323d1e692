"""What the server answers to bytes that are not an HTTP request.

Uvicorn refuses a request it cannot parse (a header line without a colon, a
method or header with characters HTTP does not allow, a path that is not
ASCII, a broken chunked body) before any app sees it, with a plain-text
``Invalid HTTP request received.``. Every other error of the API is an RFC
9457 problem document, and clients read them one way, so this protocol
answers the same 400 as a problem (code ``malformed_request``) and closes
the connection, as uvicorn does. ``petpal serve`` runs it.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from petpal.platform.errors import PROBLEM_MEDIA_TYPE, problem_type

MALFORMED = "malformed_request"
_DETAIL = (
    "the request could not be read as HTTP/1.1: its request line, a header "
    "or its chunked body is malformed"
)
# The request target, echoed as the problem's instance when it is plain
# printable ASCII of at most this length; otherwise the instance is empty.
_MAX_ECHOED_TARGET = 2048


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, with its 400 as a problem document."""

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps(
            {
                "type": problem_type(MALFORMED),
                "title": HTTPStatus.BAD_REQUEST.phrase,
                "status": 400,
                "detail": _DETAIL,
                "instance": _echoed(getattr(self, "url", b"")),
                "code": MALFORMED,
            }
        )
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()


def _echoed(target: bytes) -> str:
    if (
        0 < len(target) <= _MAX_ECHOED_TARGET
        and target.isascii()
        and all(32 < byte < 127 for byte in target)
    ):
        return target.decode()
    return ""
