"""The user mix of the load test: which actions simulated people take, how often.

Read from a TOML file — ``loadtest/mix.toml`` unless ``PETPAL_LOADTEST_MIX``
names another — by the locustfile, which runs the actions, and by the runner,
which prints the mix it ran. ``PETPAL_LOADTEST_WEIGHTS="comment=0,like=20"``
overrides single weights without a file. Only the standard library is used
here: the runner and the tests import this module, and they must never import
Locust, which monkeypatches the process with gevent.
"""

from __future__ import annotations

import math
import os
import re
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


# What a mix may say. A weight becomes that many entries in Locust's task list,
# so it is bounded; so are the pause (a person pausing a minute between actions
# does next to nothing in a run), the API's page size and the photo poll.
MAX_WEIGHT = 1_000
MAX_PAUSE_SECONDS = 60
MAX_PAGE_SIZE = 100
MAX_READY_TIMEOUT_SECONDS = 120
# The sections of a mix file and the keys of each.
SECTIONS: dict[str, tuple[str, ...]] = {
    "weights": ACTIONS,
    "pause": ("min_seconds", "max_seconds"),
    "feeds": ("page_size",),
    "photos": ("files", "ready_timeout_seconds"),
}
# Where a weight override comes from, in messages.
OVERRIDES = f"the weight overrides (--weights / ${WEIGHTS_ENV})"


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
    sections = _sections(_read(path), path)
    weights = _file_weights(sections["weights"], path)
    overridden = parse_overrides(overrides)
    weights |= overridden
    pause, feeds, photos = sections["pause"], sections["feeds"], sections["photos"]
    pause_min = _seconds(path, "pause", "min_seconds", pause, MAX_PAUSE_SECONDS)
    pause_max = _seconds(path, "pause", "max_seconds", pause, MAX_PAUSE_SECONDS)
    if pause_min > pause_max:
        raise MixError(
            f"{path}: [pause] min_seconds ({pause_min:g}) is more than "
            f"max_seconds ({pause_max:g})"
        )
    mix = Mix(
        weights=weights,
        pause_min_seconds=pause_min,
        pause_max_seconds=pause_max,
        page_size=_page_size(path, feeds),
        photos=_photos(path, photos),
        photo_ready_timeout_seconds=_seconds(
            path,
            "photos",
            "ready_timeout_seconds",
            photos,
            MAX_READY_TIMEOUT_SECONDS,
            zero_allowed=False,
        ),
        source=path,
    )
    # What the file and the overrides say together.
    where = f"{path} with {OVERRIDES}" if overridden else str(path)
    if sum(mix.weights.values()) == 0:
        raise MixError(
            f"{where}: every weight is 0: the simulated people would do nothing"
        )
    if mix.weights["post_photo"] and not mix.photos:
        raise MixError(f"{where}: post_photo has a weight but [photos] files is empty")
    return mix


def parse_overrides(text: str) -> dict[str, int]:
    """``"comment=0, like_or_unlike=20"`` as a dict of weights."""
    weights: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            raise MixError(
                f"{OVERRIDES}: a weight override is name=weight, not {item.strip()!r}"
            )
        weight = _whole_number(value)
        if weight is None:
            raise MixError(f"{OVERRIDES}: {_weight_rule(name)}, not {value!r}")
        if name in weights:
            # Found by a trial: the last was taken without a word.
            raise MixError(f"{OVERRIDES}: {name} is given twice")
        weights[name] = weight
    if unknown := sorted(set(weights) - set(ACTIONS)):
        raise MixError(
            f"{OVERRIDES}: unknown actions {unknown}; "
            f"the actions are {', '.join(ACTIONS)}"
        )
    return weights


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise MixError(f"cannot read the mix {path}: {exc}") from exc
    # Found by a trial: "Invalid statement (at line 1, column 1)".
    if text.startswith(b"\xef\xbb\xbf"):
        raise MixError(
            f"cannot read the mix {path}: it starts with a byte order mark, "
            "which TOML does not allow (save it as UTF-8 without one)"
        )
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MixError(
            f"cannot read the mix {path}: it is not UTF-8 text, as TOML must be "
            f"(byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise MixError(f"cannot read the mix {path}: {exc}") from exc
    # An integer of thousands of digits, which tomllib reads with int()
    # (found by a trial: the message was Python's, naming no key).
    except ValueError as exc:
        raise MixError(
            f"cannot read the mix {path}: it holds a number too long to read"
        ) from exc


def _sections(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The file's sections, each a table, refusing any other key."""
    known = ", ".join(f"[{name}]" for name in SECTIONS)
    for key, value in data.items():
        if key in SECTIONS:
            continue
        if isinstance(value, dict):
            raise MixError(
                f"{path}: unknown section [{_key(key)}]; the sections are {known}"
            )
        raise MixError(
            f"{path}: unknown key {_key(key)} outside any section; "
            f"the sections are {known}"
        )
    for name, keys in SECTIONS.items():
        if name not in data:
            raise MixError(
                f"{path}: no section [{name}]; it has the keys {', '.join(keys)}"
            )
        if not isinstance(data[name], dict):
            raise MixError(
                f"{path}: {name} must be the section [{name}], a table, "
                f"not {_value(data[name])}"
            )
        if name == "weights":
            continue  # its keys are the actions: _file_weights says which.
        for key in data[name]:
            if key not in keys:
                raise MixError(
                    f"{path}: [{name}] has no key {_key(key)}; "
                    f"its keys are {', '.join(keys)}"
                )
        for key in keys:
            if key not in data[name]:
                raise MixError(f"{path}: [{name}] lacks the key {key}")
    return data


def _file_weights(raw: dict[str, Any], path: Path) -> dict[str, int]:
    unknown = sorted(set(raw) - set(ACTIONS))
    missing = [action for action in ACTIONS if action not in raw]
    if unknown or missing:
        raise MixError(
            f"{path}: [weights] has unknown actions {unknown}, actions without "
            f"a weight {missing}; the actions are {', '.join(ACTIONS)}"
        )
    weights: dict[str, int] = {}
    for action in ACTIONS:
        value = raw[action]
        if not _whole_from(value, 0, MAX_WEIGHT):
            raise MixError(
                f"{path}: [weights] {_weight_rule(action)}, not {_value(value)}"
            )
        weights[action] = value
    return weights


def _whole_from(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is a whole number from ``low`` to ``high``: bool is an
    int to Python, and `like = true` is surely a typo."""
    return (
        not isinstance(value, bool) and isinstance(value, int) and low <= value <= high
    )


def _weight_rule(name: str) -> str:
    return f"the weight of {_key(name)} must be a whole number from 0 to {MAX_WEIGHT:,}"


def _whole_number(text: str) -> int | None:
    """``text`` as a weight, if it is 0 to MAX_WEIGHT in the ASCII digits 0-9."""
    # Not str.isdigit(), which takes "²"; not int(), which takes "1_000", "٣"
    # and spaces, and refuses thousands of digits with an error of its own.
    match = re.fullmatch(rf"0*([0-9]{{1,{len(str(MAX_WEIGHT))}}})", text)
    if match is None or int(match[1]) > MAX_WEIGHT:
        return None
    return int(match[1])


def _seconds(
    path: Path,
    section: str,
    key: str,
    table: dict[str, Any],
    high: float,
    *,
    zero_allowed: bool = True,
) -> float:
    """``table[key]``: a finite number of seconds up to ``high``, from 0 (or
    more than 0 unless ``zero_allowed``)."""
    value = table[key]
    # Compared before float(): an int may be too large to be one. NaN is
    # neither above nor below anything, so it fails the comparison.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if zero_allowed else value > 0)
        or not value <= high
        or not math.isfinite(value)
    ):
        bounds = "from 0 to" if zero_allowed else "more than 0 and at most"
        raise MixError(
            f"{path}: [{section}] {key} must be a number of seconds {bounds} "
            f"{high:g}, not {_value(value)}"
        )
    return float(value) + 0.0  # -0.0 is 0 (found by a trial: shown as -0)


def _page_size(path: Path, table: dict[str, Any]) -> int:
    value = table["page_size"]
    if not _whole_from(value, 1, MAX_PAGE_SIZE):
        raise MixError(
            f"{path}: [feeds] page_size must be a whole number from 1 to "
            f"{MAX_PAGE_SIZE}, the API's limits, not {_value(value)}"
        )
    return int(value)


def _photos(path: Path, table: dict[str, Any]) -> tuple[Path, ...]:
    names = table["files"]
    if not isinstance(names, list):
        raise MixError(
            f"{path}: [photos] files must be a list of paths, not {_value(names)}"
        )
    photos = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise MixError(
                f"{path}: [photos] files must list paths from the repository "
                f"root, not {_value(name)}"
            )
        photo = ROOT / name
        # Found by a trial: /etc/passwd and ../../ were taken.
        if not photo.resolve().is_relative_to(ROOT):
            raise MixError(
                f"{path}: [photos] files: {_value(name)} is outside the "
                "repository (paths are from its root)"
            )
        if not photo.is_file():
            raise MixError(
                f"{path}: [photos] files: the photo {_value(name)} does not exist "
                "(paths are from the repository root)"
            )
        photos.append(photo)
    return tuple(photos)


def _key(name: str) -> str:
    # A TOML key as written, quoted if it needs quotes (and so on one line).
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else repr(name)


def _value(value: Any) -> str:
    """A value from the file as a message shows it: short and on one line."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)  # numbers (nan and inf as TOML writes them), dates
    return text if len(text) <= 40 else text[:39] + "…"


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
