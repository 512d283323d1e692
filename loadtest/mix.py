"""The user mix of the load test: which actions simulated people take, how often.

Read from a TOML file — ``loadtest/mix.toml`` unless ``PETPAL_LOADTEST_MIX``
names another — by the locustfile, which runs the actions, and by the runner,
which prints the mix it ran. ``PETPAL_LOADTEST_WEIGHTS="comment=0,like=20"``
overrides single weights without a file. Only the standard library is used
here: the runner and the tests import this module, and they must never import
Locust, which monkeypatches the process with gevent.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIX = Path(__file__).resolve().parent / "mix.toml"
MIX_ENV = "PETPAL_LOADTEST_MIX"
WEIGHTS_ENV = "PETPAL_LOADTEST_WEIGHTS"

# How the runner tells the locustfile which accounts the data set has: a
# username template with {i} and how many (user_{i}, 20000), or a
# comma-separated list; the password they share; a seed for who takes which.
ACCOUNTS_ENV = "PETPAL_LOADTEST_ACCOUNTS"
ACCOUNT_COUNT_ENV = "PETPAL_LOADTEST_ACCOUNT_COUNT"
PASSWORD_ENV = "PETPAL_LOADTEST_PASSWORD"
SEED_ENV = "PETPAL_LOADTEST_SEED"
# Without them: the demo seed's owners (`petpal seed`, README).
DEMO_ACCOUNTS = "maya,theo,sam,lena"
# The published demo log-in (petpal.seed.DEMO_PASSWORD; the load test drives
# the server from outside, and imports none of it).
DEMO_PASSWORD = "pawprints-on-the-porch"

# One more simulated client asks for /healthz, which the server answers with a
# constant, five times a second: a yardstick for what the machine alone adds
# to every request's latency (a busy neighbour, a slow core). It is reported
# beside the actions and not held to their limit.
BASELINE_NAME = "/healthz (baseline)"
BASELINE_PAUSE_SECONDS = 0.2

# What the simulated people write under posts (the load test and the
# benchmark report's user mix).
COMMENTS = (
    "What a good boy! 😍",
    "Those eyes 🥺",
    "Best nap spot in the house.",
    "Trop mignon ! 🐾",
    "Give them a scratch from me",
    "かわいい！",
)

# Every action the locustfile implements, in the order the mix table lists
# them. A mix must give each a weight, so that a new action is never left out
# of a file by accident.
ACTIONS = (
    "read_home_feed",
    "scroll_home_feed",
    "open_post",
    "open_profile",
    "open_pet",
    "read_trending",
    "read_public_feed",
    "browse_hashtag",
    "read_pet_of_the_day",
    "like_or_unlike",
    "comment",
    "follow_or_unfollow",
    "post_photo",
)


class MixError(ValueError):
    """The mix file or the weight overrides do not describe a usable mix."""


@dataclass(frozen=True)
class Mix:
    weights: dict[str, int]
    pause_min_seconds: float
    pause_max_seconds: float
    page_size: int
    photos: tuple[Path, ...]
    photo_ready_timeout_seconds: float
    source: Path

    def share(self, action: str) -> float:
        """The fraction of all actions that are ``action``."""
        return self.weights[action] / sum(self.weights.values())


def load_mix(path: Path | None = None, overrides: str | None = None) -> Mix:
    """The mix in ``path`` (else $PETPAL_LOADTEST_MIX, else mix.toml), overridden."""
    if path is None:
        path = Path(os.environ.get(MIX_ENV) or DEFAULT_MIX)
    if overrides is None:
        overrides = os.environ.get(WEIGHTS_ENV, "")
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MixError(f"cannot read the mix {path}: {exc}") from exc
    try:
        weights = _weights(data["weights"]) | parse_overrides(overrides)
        mix = Mix(
            weights=weights,
            pause_min_seconds=float(data["pause"]["min_seconds"]),
            pause_max_seconds=float(data["pause"]["max_seconds"]),
            page_size=int(data["feeds"]["page_size"]),
            photos=tuple(ROOT / name for name in data["photos"]["files"]),
            photo_ready_timeout_seconds=float(data["photos"]["ready_timeout_seconds"]),
            source=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MixError(f"{path}: {type(exc).__name__} {exc}") from exc
    _check(mix)
    return mix


def parse_overrides(text: str) -> dict[str, int]:
    """``"comment=0, like_or_unlike=20"`` as a dict of weights."""
    weights: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        if not equals:
            raise MixError(f"a weight override is name=weight, not {item.strip()!r}")
        weights[name.strip()] = value.strip()
    return _weights(weights)


def _weights(raw: dict[str, Any]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for name, value in raw.items():
        # bool is an int to Python, and `like = true` is surely a typo.
        if isinstance(value, bool) or not str(value).isdigit():
            raise MixError(f"the weight of {name} must be a whole number ≥ 0")
        weights[name] = int(value)
    return weights


def _check(mix: Mix) -> None:
    unknown = sorted(set(mix.weights) - set(ACTIONS))
    missing = [action for action in ACTIONS if action not in mix.weights]
    if unknown or missing:
        raise MixError(
            f"{mix.source}: unknown actions {unknown}, actions without a weight "
            f"{missing}; the actions are {', '.join(ACTIONS)}"
        )
    if sum(mix.weights.values()) == 0:
        raise MixError("every weight is 0: the simulated people would do nothing")
    if not 0 <= mix.pause_min_seconds <= mix.pause_max_seconds:
        raise MixError("the pause needs 0 ≤ min_seconds ≤ max_seconds")
    if not 1 <= mix.page_size <= 100:
        raise MixError("page_size is 1 to 100, the API's limits")
    if mix.weights["post_photo"] and not mix.photos:
        raise MixError("post_photo has a weight but [photos] lists no files")
    for photo in mix.photos:
        if not photo.is_file():
            raise MixError(f"the photo {photo} does not exist")


def describe(mix: Mix) -> str:
    """The mix as the table the runner prints before a run."""
    lines = [
        f"user mix from {_shown(mix.source)}; a pause of "
        f"{mix.pause_min_seconds:g}–{mix.pause_max_seconds:g} s between actions",
        f"  {'action':<22} {'weight':>6} {'share':>6}",
    ]
    for action in ACTIONS:
        weight = mix.weights[action]
        lines.append(f"  {action:<22} {weight:>6} {mix.share(action):>6.1%}")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    # Relative to the repository when it is inside it: no machine paths in logs.
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
