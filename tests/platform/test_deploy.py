"""The compose file runs only commands and settings the code has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from petpal.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PETPAL = Path(sys.executable).parent / "petpal"


def petpal_services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == "petpal"
    }


def test_every_petpal_process_in_compose_is_a_command_that_accepts_its_options() -> (
    None
):
    services = petpal_services()
    assert {"api", "relay", "worker-media", "worker-default", "migrate"} <= set(
        services
    )
    for name, service in services.items():
        program, *args = service["command"]
        assert program == "petpal", name
        # --help after the options: an unknown option still fails the parse,
        # though nothing starts.
        result = subprocess.run(
            [str(PETPAL), *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (name, result.stderr)


def test_every_setting_in_compose_exists() -> None:
    known = {f"PETPAL_{name.upper()}" for name in Settings.model_fields}
    for name, service in petpal_services().items():
        for variable in service["environment"]:
            assert variable in known, (name, variable)
