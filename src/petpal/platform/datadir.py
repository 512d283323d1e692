"""One embedded server per data directory.

An embedded server (SQLite, no Redis) is the only runner of its database's
jobs, so at start it takes the jobs it finds running for ones a dead
process left, and empties the jobs' scratch folder. A second server started
on the same directory did both to the live one's work (found by a trial:
its photo jobs ran twice, two photos stayed "processing" for five minutes,
and the port was in use anyway). The runner now holds an exclusive lock on
``<data dir>/server.lock`` while it runs; another process that needs it is
refused. The operating system drops the lock when its holder exits, however
it exits, so a killed server leaves nothing to clean up.

Only this module's standard-library imports: the command line checks the
lock before anything chooses how metrics are kept.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "server.lock"

# Lock file to (descriptor, holders): a process's app may start several
# times (the demo seed, then the server; hundreds of apps in the tests).
_held: dict[Path, tuple[int, int]] = {}


class DataDirInUseError(Exception):
    """Another process runs the jobs of this data directory."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        who = f"process {holder}" if holder.isdigit() else "another process"
        super().__init__(
            f"{data_dir} is in use by {who}, an embedded PetPal server: one "
            "server serves a data directory (stop it first, or give this "
            "one another --data-dir)"
        )


def claim(data_dir: Path) -> None:
    """Hold ``data_dir`` for this process; ``DataDirInUseError`` if another does."""
    path = (data_dir / LOCK_NAME).resolve()
    if path in _held:
        fd, holders = _held[path]
        _held[path] = (fd, holders + 1)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirInUseError(data_dir, holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = (fd, 1)


def release(data_dir: Path) -> None:
    """Let go of a ``claim`` (the last one unlocks)."""
    path = (data_dir / LOCK_NAME).resolve()
    fd, holders = _held.pop(path, (-1, 0))
    if holders > 1:
        _held[path] = (fd, holders - 1)
    elif fd >= 0:
        os.close(fd)  # closing the descriptor drops the lock
