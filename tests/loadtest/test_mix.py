"""The load test's user mix: the file, the overrides, and the scenarios' actions.

The locustfile itself is never imported here — Locust patches the importing
process with gevent — so its actions are read from its syntax tree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from loadtest.mix import ACTIONS, DEFAULT_MIX, ROOT, MixError, describe, load_mix

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def test_the_default_mix_weighs_every_action_and_its_photos_exist() -> None:
    mix = load_mix(DEFAULT_MIX, overrides="")

    assert set(mix.weights) == set(ACTIONS)
    assert sum(mix.weights.values()) == 100  # so the table reads as percentages
    assert mix.photos
    assert all(photo.is_file() for photo in mix.photos)
    assert 0 < mix.pause_min_seconds <= mix.pause_max_seconds


def test_overrides_change_single_weights() -> None:
    mix = load_mix(DEFAULT_MIX, overrides=" comment=0, post_photo = 5 ,")

    assert mix.weights["comment"] == 0
    assert mix.weights["post_photo"] == 5
    assert mix.weights["open_post"] == load_mix(DEFAULT_MIX, "").weights["open_post"]


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ("tweet=3", "unknown actions ['tweet']"),
        ("comment=-1", "whole number"),
        ("comment=1.5", "whole number"),
        ("comment", "name=weight"),
    ],
)
def test_bad_overrides_are_refused(overrides: str, complaint: str) -> None:
    with pytest.raises(MixError, match=complaint.replace("[", r"\[")):
        load_mix(DEFAULT_MIX, overrides=overrides)


def test_a_file_must_weigh_every_action(tmp_path: Path) -> None:
    text = DEFAULT_MIX.read_text().replace("open_pet = 4\n", "")
    (tmp_path / "mix.toml").write_text(text)

    with pytest.raises(MixError, match=r"without a weight \['open_pet'\]"):
        load_mix(tmp_path / "mix.toml", overrides="")


def test_a_mix_with_nothing_to_do_is_refused() -> None:
    nothing = ",".join(f"{action}=0" for action in ACTIONS)

    with pytest.raises(MixError, match="every weight is 0"):
        load_mix(DEFAULT_MIX, overrides=nothing)


def test_the_printed_mix_lists_each_action_with_its_share() -> None:
    lines = describe(load_mix(DEFAULT_MIX, overrides="")).splitlines()

    assert [line.split()[0] for line in lines[2:]] == list(ACTIONS)
    assert "loadtest/mix.toml" in lines[0]


def test_the_locustfile_implements_every_action_of_the_mix() -> None:
    tree = ast.parse(LOCUSTFILE.read_text())
    user = next(
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "PetOwner"
    )
    methods = {node.name for node in user.body if isinstance(node, ast.FunctionDef)}

    assert set(ACTIONS) <= methods


def test_nothing_here_imported_locust() -> None:
    # The runner and these modules run in processes that must stay unpatched.
    import loadtest.run  # noqa: F401 - imported for what it imports

    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules
