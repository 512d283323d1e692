"""Streaming multipart upload: the body goes to a temporary file as it arrives.

Starlette's form parser would buffer the whole body before our handler sees
it; parsing here lets us stop at the size limit while the bytes stream in and
keep memory flat however large the file claims to be.
"""

from __future__ import annotations

import fcntl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from petpal.platform.errors import ProblemError

FILE_FIELD = "file"


@dataclass
class ReceivedFile:
    path: Path
    size: int
    filename: str | None


@dataclass
class _PartState:
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    is_file_field: bool = False
    filename: str | None = None
    # The closing boundary came: a body that stops before it was cut short.
    ended: bool = False


def _bad_request(detail: str) -> ProblemError:
    return ProblemError(400, "malformed_upload", detail)


async def receive_file(
    request: Request, directory: Path, max_bytes: int
) -> ReceivedFile:
    """Stream the ``file`` part of a multipart body into ``directory``.

    The caller owns the returned file and must delete it.
    """
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise ProblemError(
            415,
            "unsupported_media_type",
            "upload the photo as multipart/form-data with a 'file' field",
        )
    if not options.get(b"boundary"):
        # The right type, but a body that cannot be split into its parts.
        raise _bad_request(
            "the Content-Type multipart/form-data has no boundary parameter"
        )
    directory.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
        dir=directory, prefix="upload-", delete=False
    )
    path = Path(out.name)
    # In use while open: the scratch sweep (media.service.sweep_scratch)
    # leaves a file alone whose lock it cannot take, however old it looks
    # (found by a trial: bytes wait in the write buffer, so a slow upload's
    # file kept the time it was made, and a sweep deleted it mid-upload).
    fcntl.flock(out.fileno(), fcntl.LOCK_SH)
    state = _PartState()
    found: list[ReceivedFile] = []
    written = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[bytes(state.header_field).lower()] = bytes(state.header_value)
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state.headers.get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and found:
            # A second photo would be dropped without a word (found by a
            # trial): one upload is one photo, and its client is told so.
            raise _bad_request(
                "the multipart body has more than one 'file' part; "
                "upload one photo per request"
            )
        state.is_file_field = name == FILE_FIELD
        raw_filename = disposition.get(b"filename")
        state.filename = (
            raw_filename.decode("utf-8", "replace")[:255] if raw_filename else None
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal written
        if not state.is_file_field:
            return
        written += end - start
        if written > max_bytes:
            raise ProblemError(
                413, "file_too_large", f"the file is larger than {max_bytes} bytes"
            )
        out.write(data[start:end])

    def on_end() -> None:
        state.ended = True

    def on_part_end() -> None:
        if state.is_file_field:
            found.append(ReceivedFile(path=path, size=written, filename=state.filename))
        state.headers.clear()
        state.is_file_field = False

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        # Whatever stopped the upload (limit, disconnect, bad body), leave no file.
        out.close()
        path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise _bad_request("the multipart body is malformed") from exc
        raise
    out.close()
    if not found:
        path.unlink(missing_ok=True)
        if not state.ended:
            # Found by three trials: this was "has no 'file' part", for a
            # body that stopped in the file part, its headers or a boundary.
            raise _bad_request(
                "the multipart body ends before its closing boundary: the "
                "upload was cut short"
            )
        raise _bad_request("the multipart body has no 'file' part")
    if found[0].size == 0:
        path.unlink(missing_ok=True)
        raise ProblemError(422, "empty_file", "the uploaded file is empty")
    return found[0]
