#!/usr/bin/env python3
"""PetPal's developer entry point: one command to run the demo, one to test.

    python3 dev.py run     # install into .venv, migrate, seed once, serve :8000
    python3 dev.py test    # install into .venv, lint, type-check, run the suite
    python3 dev.py install # only create and fill .venv

Only the Python standard library is used here, so a fresh machine with
Python 3.11+ and access to the package index can run either command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
REQUIREMENTS = ROOT / "requirements" / "dev.txt"
STAMP = VENV / ".petpal-installed"


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, env=env)


def ensure_venv() -> None:
    """Create .venv and install the hash-checked pins, once per lock change."""
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(
        REQUIREMENTS.read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--quiet", "--require-hashes", "-r", REQUIREMENTS)
    # The project itself: editable, and without touching the pinned set.
    sh(
        PY,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-e",
        ".",
    )
    STAMP.write_text(digest)


def run(argv: list[str]) -> None:
    data_dir = Path(os.environ.get("PETPAL_DATA_DIR", ROOT / "var"))
    env = dict(os.environ, PETPAL_DATA_DIR=str(data_dir))
    petpal = BIN / "petpal"
    sh(petpal, "migrate", env=env)
    if not (data_dir / ".seeded").exists():
        sh(petpal, "seed", env=env)
        (data_dir / ".seeded").touch()
    host = os.environ.get("PETPAL_HOST", "127.0.0.1")
    port = os.environ.get("PETPAL_PORT", "8000")
    print(f"PetPal is at http://{host}:{port}  (API docs: /docs)", flush=True)
    os.execve(
        petpal, [str(petpal), "serve", "--host", host, "--port", port, *argv], env
    )


def test(argv: list[str]) -> None:
    sh(BIN / "ruff", "check", "src", "tests", "dev.py")
    sh(BIN / "ruff", "format", "--check", "src", "tests", "dev.py")
    sh(BIN / "mypy")
    sh(PY, "-m", "pytest", *argv)


def lock(_argv: list[str]) -> None:
    """Recompile the pins (needs uv on PATH): main first, dev constrained by it."""
    for name in ("main", "dev"):
        sh(
            "uv",
            "pip",
            "compile",
            "--python-version",
            "3.11",
            "--generate-hashes",
            "--no-header",
            f"requirements/{name}.in",
            "-o",
            f"requirements/{name}.txt",
        )


def install(_argv: list[str]) -> None:
    """Only create and fill .venv (ensure_venv has already run)."""


COMMANDS = {"run": run, "test": test, "install": install, "lock": lock}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command = sys.argv[1]
    if command != "lock":
        ensure_venv()
    COMMANDS[command](sys.argv[2:])


if __name__ == "__main__":
    main()
