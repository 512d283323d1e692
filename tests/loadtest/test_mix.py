"""The load test's user mix: the file, the overrides, and the scenarios' actions.

The locustfile itself is never imported here — Locust patches the importing
process with gevent — so its actions are read from its syntax tree.
"""

from __future__ import annotations

import ast
import re
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


# --- what a mix may say ------------------------------------------------------


def _edited(old: str, new: str) -> str:
    """The default mix with ``old`` (which it must contain) made ``new``."""
    text = DEFAULT_MIX.read_text()
    assert old in text
    return text.replace(old, new, 1)


def _mix_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "mix.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _refusal(path: Path, overrides: str = "") -> str:
    """Why ``load_mix`` refuses: one plain line, without Python's names."""
    with pytest.raises(MixError) as caught:
        load_mix(path, overrides=overrides)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert not re.search(r"\w*(Error|Exception)\b|Traceback|invalid literal", message)
    return message


def _file_refusal(path: Path, complaint: str) -> None:
    message = _refusal(path)
    assert message.startswith(f"{path}: ") or message.startswith(
        f"cannot read the mix {path}: "
    )
    assert re.search(complaint, message), message


def _override_refusal(overrides: str, complaint: str) -> None:
    message = _refusal(DEFAULT_MIX, overrides)
    assert message.startswith(
        "the weight overrides (--weights / $PETPAL_LOADTEST_WEIGHTS): "
    )
    assert "mix.toml" not in message
    assert re.search(complaint, message), message


@pytest.mark.parametrize(
    "line",
    [
        # Found by a trial: Locust then built a task list this long, and died
        # of MemoryError.
        "comment = 9000000000000000000",
        "comment = 1001",
        "comment = -1",
        "comment = true",
        "comment = 1.0",
        'comment = "3"',
    ],
)
def test_a_weight_in_the_file_is_a_whole_number_up_to_1000(
    tmp_path: Path, line: str
) -> None:
    path = _mix_file(tmp_path, _edited("comment = 3", line))

    _file_refusal(
        path,
        r"\[weights\] the weight of comment must be a whole number "
        r"from 0 to 1,000, not ",
    )


@pytest.mark.parametrize(
    "overrides",
    [
        # Found by a trial: as in the file, Locust died of MemoryError.
        "comment=99999999999999999999999",
        "comment=1001",
        "comment=" + "9" * 5000,  # more digits than int() reads
    ],
)
def test_a_weight_override_is_a_whole_number_up_to_1000(overrides: str) -> None:
    _override_refusal(
        overrides, "the weight of comment must be a whole number from 0 to 1,000"
    )


def test_the_largest_weights_are_taken() -> None:
    mix = load_mix(DEFAULT_MIX, overrides="comment=1000,like_or_unlike=0001000")

    assert mix.weights["comment"] == mix.weights["like_or_unlike"] == 1000


def test_an_integer_too_long_to_read_is_refused(tmp_path: Path) -> None:
    path = _mix_file(tmp_path, _edited("comment = 3", "comment = " + "9" * 5000))

    # Found by a trial: Python's own words, naming no key.
    _file_refusal(path, "it holds a number too long to read$")


def test_a_mix_file_with_a_byte_order_mark_says_so(tmp_path: Path) -> None:
    # Found by a trial: "Invalid statement (at line 1, column 1)".
    path = _mix_file(tmp_path, b"\xef\xbb\xbf" + DEFAULT_MIX.read_bytes())

    _file_refusal(path, "it starts with a byte order mark, which TOML does not")


def _with_section_as(name: str, value: str) -> str:
    """The default mix with the section [name] made ``name = value``."""
    text = DEFAULT_MIX.read_text()
    start = text.index(f"\n[{name}]\n") + 1
    end = text.find("\n[", start)
    rest = text[:start] + (text[end + 1 :] if end != -1 else "")
    return f"{name} = {value}\n{rest}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Found by a trial: both were an AttributeError traceback.
        ("weights", "5"),
        ("weights", "[1, 2]"),
        ("pause", "5"),
        ("feeds", '"page_size = 10"'),
        ("photos", '["a.jpg"]'),
    ],
)
def test_a_section_that_is_not_a_table_is_refused(
    tmp_path: Path, name: str, value: str
) -> None:
    path = _mix_file(tmp_path, _with_section_as(name, value))

    _file_refusal(path, rf"{name} must be the section \[{name}\], a table, not ")


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # Found by a trial: 10.9 became 10, true became 1 and "7" became 7.
        *(
            (
                "page_size = 10",
                f"page_size = {value}",
                "page_size must be a whole number from 1 to 100",
            )
            for value in ("10.9", "true", '"7"', "0", "101")
        ),
        # Found by a trial: true became 1.0; and with 1000 or inf a person did
        # one action in a whole run, which passed having measured nothing.
        (
            "min_seconds = 0.5",
            "min_seconds = true",
            "min_seconds must be a number of seconds from 0 to 60, not true",
        ),
        (
            "max_seconds = 2.0",
            "max_seconds = 1000",
            "max_seconds must be a number of seconds from 0 to 60, not 1000",
        ),
        ("max_seconds = 2.0", "max_seconds = inf", "max_seconds .* not inf"),
        ("max_seconds = 2.0", "max_seconds = nan", "max_seconds .* not nan"),
        ("max_seconds = 2.0", "max_seconds = 60.5", "max_seconds .* not 60.5"),
        ("min_seconds = 0.5", "min_seconds = -0.5", "min_seconds .* not -0.5"),
        (
            "min_seconds = 0.5",
            "min_seconds = 3",
            r"\[pause\] min_seconds \(3\) is more than max_seconds \(2\)$",
        ),
        # Found by a trial: ready_timeout_seconds was never checked.
        *(
            (
                "ready_timeout_seconds = 10",
                f"ready_timeout_seconds = {value}",
                "ready_timeout_seconds must be a number of seconds more than 0 and "
                f"at most 120, not {value}",
            )
            for value in ("-5", "0", "nan", "inf", "121", "true")
        ),
    ],
)
def test_numbers_are_checked_strictly(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    path = _mix_file(tmp_path, _edited(old, new))

    _file_refusal(path, complaint)


@pytest.mark.parametrize(
    ("files", "complaint"),
    [
        # Found by a trial: a string was read letter by letter.
        ('"a.jpg"', "files must be a list of paths, not 'a.jpg'"),
        ('[""]', "files must list paths from the repository root, not ''"),
        ('["  "]', "files must list paths from the repository root, not '  '"),
        ("[3]", "files must list paths from the repository root, not 3"),
        ('["no/such.jpg"]', "files: the photo 'no/such.jpg' does not exist"),
        # Found by a trial: taken, and uploaded.
        ('["/etc/hostname"]', "files: '/etc/hostname' is outside the repository"),
        ('["../../../etc/hostname"]', "files: '../../../etc/hostname' is outside"),
    ],
)
def test_photos_are_a_list_of_paths(tmp_path: Path, files: str, complaint: str) -> None:
    text = re.sub(
        r"(?ms)^files = \[.*?^\]$", f"files = {files}", DEFAULT_MIX.read_text()
    )
    assert f"files = {files}" in text
    path = _mix_file(tmp_path, text)

    _file_refusal(path, r"\[photos\] " + re.escape(complaint))


def test_whole_seconds_and_the_limits_themselves_are_taken(tmp_path: Path) -> None:
    text = (
        _edited("min_seconds = 0.5", "min_seconds = 0")
        .replace("max_seconds = 2.0", "max_seconds = 60")
        .replace("ready_timeout_seconds = 10", "ready_timeout_seconds = 120")
        .replace("page_size = 10", "page_size = 100")
    )
    mix = load_mix(_mix_file(tmp_path, text), overrides="")

    assert (mix.pause_min_seconds, mix.pause_max_seconds) == (0.0, 60.0)
    assert mix.photo_ready_timeout_seconds == 120.0
    assert mix.page_size == 100


def test_a_pause_of_minus_zero_is_zero(tmp_path: Path) -> None:
    # Found by a trial: taken and shown as "a pause of -0–2 s".
    path = _mix_file(tmp_path, _edited("min_seconds = 0.5", "min_seconds = -0.0"))

    assert "a pause of 0–2 s" in describe(load_mix(path, overrides=""))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        # Found by a trial: each was silently ignored, the intended setting
        # with it.
        (
            _edited("page_size = 10", "page_size = 10\npage_sise = 3"),
            r"\[feeds\] has no key page_sise; its keys are page_size$",
        ),
        (
            _edited("ready_timeout_seconds = 10", "ready_timeout = 1"),
            r"\[photos\] has no key ready_timeout; its keys are files, "
            "ready_timeout_seconds$",
        ),
        (
            DEFAULT_MIX.read_text() + "\n[feed]\npage_size = 3\n",
            r"unknown section \[feed\]; the sections are \[weights\], \[pause\], "
            r"\[feeds\], \[photos\]$",
        ),
        (
            "ready_timeout = 1\n" + DEFAULT_MIX.read_text(),
            r"unknown key ready_timeout outside any section; the sections are ",
        ),
        (
            _edited("page_size = 10", "'page size' = 10"),
            r"\[feeds\] has no key 'page size'",
        ),
        # And a missing one said KeyError.
        (
            _edited("page_size = 10", ""),
            r"\[feeds\] lacks the key page_size$",
        ),
        (
            _with_section_as("pause", "{}").replace("pause = {}\n", ""),
            r"no section \[pause\]; it has the keys min_seconds, max_seconds$",
        ),
    ],
)
def test_unknown_and_missing_keys_are_refused_by_name(
    tmp_path: Path, text: str, complaint: str
) -> None:
    _file_refusal(_mix_file(tmp_path, text), complaint)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        # Found by a trial: "…/loadtest/mix.toml: MixError a weight override
        # is name=weight…", blaming the file, in Python's words.
        ("comment", "a weight override is name=weight, not 'comment'$"),
        ("=3", "a weight override is name=weight, not '=3'$"),
        # Found by a trial: "invalid literal for int()": str.isdigit() takes
        # superscript digits. Nor do other scripts' digits, which int() reads.
        ("comment=²", "the weight of comment must be a whole number .*, not '²'$"),
        ("comment=٣", "the weight of comment must be a whole number .*, not '٣'$"),
        ("comment=1_0", "the weight of comment must be a whole number .*, not '1_0'$"),
        ("comment=1.5", "the weight of comment must be a whole number .*, not '1.5'$"),
        ("comment=-1", "the weight of comment must be a whole number .*, not '-1'$"),
        ("comment=", "the weight of comment must be a whole number .*, not ''$"),
        ("tweet=3", r"unknown actions \['tweet'\]; the actions are read_home_feed, "),
        # Found by a trial: the last was taken without a word.
        ("comment=1,comment=2", "comment is given twice$"),
    ],
)
def test_a_bad_override_is_blamed_on_the_overrides(
    overrides: str, complaint: str
) -> None:
    _override_refusal(overrides, complaint)


def test_a_mix_file_not_in_utf8_is_named(tmp_path: Path) -> None:
    # Found by a trial: "'utf-8' codec can't decode byte 0x80…", without the
    # file's path (and as a UnicodeDecodeError, which load_mix did not catch).
    path = _mix_file(tmp_path, b"\x80" + DEFAULT_MIX.read_bytes())

    _file_refusal(
        path,
        "it is not UTF-8 text, as TOML must be "
        r"\(byte 0x80 at offset 0\)$",
    )


def test_a_mix_with_nothing_to_do_names_the_file_and_the_overrides() -> None:
    nothing = ",".join(f"{action}=0" for action in ACTIONS)

    message = _refusal(DEFAULT_MIX, nothing)

    assert message.startswith(f"{DEFAULT_MIX} with the weight overrides (")
    assert "every weight is 0" in message
