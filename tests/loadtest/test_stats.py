"""Reading Locust's CSV results and the load test's verdict on them.

``run_stats.csv`` is a real Locust 2.47 result (30 people on the demo data
set, on a busy machine); failures and exceptions are written here with Locust's headers.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from loadtest.mix import BASELINE_NAME
from loadtest.stats import AGGREGATED, read_results, table, verdict
from tests.conftest import FIXTURES

FAILURES_HEADER = "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
EXCEPTIONS_HEADER = "Count,Message,Traceback,Nodes\n"
LIMITS = {AGGREGATED: 500.0}


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """A run without failures or exceptions; tests add their own."""
    shutil.copyfile(FIXTURES / "locust" / "run_stats.csv", tmp_path / "run_stats.csv")
    (tmp_path / "run_failures.csv").write_text(FAILURES_HEADER)
    (tmp_path / "run_exceptions.csv").write_text(EXCEPTIONS_HEADER)
    return tmp_path / "run"


def test_reads_every_request_name_and_the_aggregate(prefix: Path) -> None:
    results = read_results(prefix)

    home = next(s for s in results.requests if s.label == "GET /api/v1/feed/home")
    assert (home.count, home.failures) == (252, 0)
    assert (home.median_ms, home.p95_ms, home.p99_ms) == (12, 260, 950)
    assert home.max_ms == pytest.approx(1416.12, abs=0.01)
    assert len(results.requests) == 23
    assert results.aggregated is not None
    assert results.aggregated.count == sum(s.count for s in results.requests)
    assert results.failures == []
    assert results.exceptions == []


def test_the_table_has_a_line_per_request_with_its_limit(prefix: Path) -> None:
    results = read_results(prefix)
    limits = {**LIMITS, "POST /api/v1/auth/token": 2000.0}

    lines = table(results, limits).splitlines()

    assert len(lines) == 2 + 23 + 2  # header, rule, requests, rule, aggregate
    login = next(line for line in lines if "POST /api/v1/auth/token" in line)
    assert login.split()[-1] == "2000"
    baseline = next(line for line in lines if BASELINE_NAME in line)
    assert baseline.split()[-1] == "—"  # a yardstick, not an action
    assert lines[-1].startswith(AGGREGATED)


def test_each_request_over_its_p99_limit_fails_the_gate(prefix: Path) -> None:
    results = read_results(prefix)
    over = {s.label for s in results.requests if s.p99_ms > 500 and s.is_action}

    reasons = verdict(results, LIMITS)

    assert over
    assert len(reasons) == len(over)
    assert all(any(label in reason for label in over) for reason in reasons)


def test_the_baseline_is_not_held_to_the_limit(prefix: Path) -> None:
    results = read_results(prefix)
    baseline = next(s for s in results.requests if s.name == BASELINE_NAME)
    assert baseline.p99_ms == 240

    reasons = verdict(results, {AGGREGATED: 100.0})

    assert not any(BASELINE_NAME in reason for reason in reasons)


def test_limits_for_single_requests_replace_the_default(prefix: Path) -> None:
    results = read_results(prefix)
    generous = {s.label: s.p99_ms for s in results.requests}

    assert verdict(results, {**LIMITS, **generous}) == []
    assert verdict(results, {AGGREGATED: 10_000.0}) == []


def test_any_failed_request_fails_the_gate(prefix: Path) -> None:
    Path(f"{prefix}_failures.csv").write_text(
        FAILURES_HEADER
        + "POST,/api/v1/posts/{post_id}/like,HTTP 503 database_busy,3,1.0,2.0\n"
    )

    reasons = verdict(read_results(prefix), {AGGREGATED: 10_000.0})

    assert reasons == [
        "POST /api/v1/posts/{post_id}/like failed 3×: HTTP 503 database_busy"
    ]


def test_an_error_raised_in_a_scenario_fails_the_gate(prefix: Path) -> None:
    # Locust counts these apart from request failures: the run "passes" in
    # its own exit status while a whole action never ran.
    Path(f"{prefix}_exceptions.csv").write_text(
        EXCEPTIONS_HEADER + "2,KeyError('items'),Traceback …,local\n"
    )

    reasons = verdict(read_results(prefix), {AGGREGATED: 10_000.0})

    assert reasons == ["the scenario raised 2× KeyError('items')"]


def test_a_run_without_requests_fails_the_gate(tmp_path: Path) -> None:
    header = (FIXTURES / "locust" / "run_stats.csv").read_text().splitlines()[0]
    aggregate = "," + AGGREGATED + ",0,0,0,0,0,0,0,0,0" + ",N/A" * 11
    (tmp_path / "run_stats.csv").write_text(f"{header}\n{aggregate}\n")
    (tmp_path / "run_failures.csv").write_text(FAILURES_HEADER)
    (tmp_path / "run_exceptions.csv").write_text(EXCEPTIONS_HEADER)

    results = read_results(tmp_path / "run")

    assert results.aggregated is not None
    assert math.isnan(results.aggregated.p99_ms)
    assert verdict(results, LIMITS) == ["no request was made: the run measured nothing"]
