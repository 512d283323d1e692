"""Where a serving process's CPU goes: py-spy samples, sorted by whose code ran.

The report samples the server while wrk holds an endpoint at saturation and
attributes each sample to the code at the top of the stack (its own time),
grouped by library: so "what limits it" is read off the process, not
guessed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"

# Checked in order against the top frame's file; the first match names it.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authentication (PyJWT, our token check)", ("jwt/", "platform/security.py")),
    (
        "Redis client (redis-py, our cache and timeline calls)",
        (
            "redis/",
            "hiredis",
            "platform/redis_",
            "platform/cache.py",
            "platform/timelines.py",
            "platform/store_calls.py",
        ),
    ),
    ("database (SQLAlchemy, asyncpg)", ("sqlalchemy/", "asyncpg/")),
    ("validation and JSON (pydantic, orjson)", ("pydantic", "orjson")),
    ("FastAPI and Starlette (routing, dependencies)", ("fastapi/", "starlette/")),
    (
        "our middleware (request edge, logs, limits)",
        (
            "platform/observability.py",
            "platform/ratelimit.py",
            "platform/app.py",
            "structlog/",
            "logging/",
        ),
    ),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("uvicorn (HTTP parsing, protocol)", ("uvicorn/", "httptools")),
    ("our feed, post and profile code", ("petpal/",)),
    ("asyncio (tasks, futures, timeouts, the loop)", ("asyncio/", "uvloop")),
)
OTHER = "other"


def available() -> bool:
    return PY_SPY.exists() or shutil.which("py-spy") is not None


class Sampler:
    """py-spy recording one process in the background, 100 samples a second."""

    def __init__(self, pid: int, seconds: float) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="petpal-profile-")
        self.path = Path(self.folder.name) / "samples.txt"
        executable = str(PY_SPY) if PY_SPY.exists() else "py-spy"
        self.process = subprocess.Popen(
            [
                executable,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> dict[str, float]:
        """Shares of the samples by group; empty if py-spy could not sample."""
        try:
            _, errors = self.process.communicate(timeout=120)
            if self.process.returncode != 0 or not self.path.exists():
                print(f"  (no profile: {errors.strip()[:200]})", flush=True)
                return {}
            return shares(self.path.read_text())
        finally:
            self.folder.cleanup()


def group_of(frame: str) -> str:
    for name, markers in GROUPS:
        if any(marker in frame for marker in markers):
            return name
    return OTHER


def shares(collapsed: str) -> dict[str, float]:
    """``{group: share of samples}`` from py-spy's collapsed stacks."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        # py-spy puts the thread first; idle threads wait in threading.
        if "threading.py" in frames[-1]:
            continue
        counts[group_of(frames[-1])] += int(number)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else {}
