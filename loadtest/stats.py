"""Locust's final results, the table the runner prints, and the gate's verdict.

The locustfile writes them when Locust quits, to the file
``$PETPAL_LOADTEST_FINAL``: a line per request name, the ``Aggregated`` line,
the failures, the errors raised inside the scenarios (which are not request
failures and would otherwise pass unseen), and how often each action of the
mix was taken. (Locust's own CSV files, kept beside it, are rewritten once a
second and miss the run's last second.) Percentiles are Locust's, from
response times kept to the millisecond below 100 ms, rounded to 10 ms up to
1 s, to 100 ms up to 10 s and to the second above; one in the slowest
request's bucket is that request's exact time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.mix import BASELINE_NAME

AGGREGATED = "Aggregated"
# Where the locustfile writes the final results (set by the runner).
FINAL_RESULTS_ENV = "PETPAL_LOADTEST_FINAL"


@dataclass(frozen=True)
class RequestStats:
    method: str
    name: str
    count: int
    failures: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    per_second: float

    @property
    def label(self) -> str:
        """``GET /api/v1/feed/home``: how the table and the limits name it."""
        return f"{self.method} {self.name}".strip()

    @property
    def is_action(self) -> bool:
        """Whether a person waits for it (so the latency gate applies)."""
        return self.name not in (AGGREGATED, BASELINE_NAME)


@dataclass(frozen=True)
class Failure:
    label: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class Results:
    requests: list[RequestStats]
    aggregated: RequestStats | None
    failures: list[Failure]
    exceptions: list[str]
    # How many times each action of the mix was taken.
    actions: dict[str, int] = field(default_factory=dict)


def read_results(path: Path) -> Results:
    """The final results the locustfile wrote to ``path`` as Locust quit."""
    final = json.loads(path.read_text(encoding="utf-8"))
    return Results(
        requests=[_request_stats(entry) for entry in final["requests"]],
        aggregated=_request_stats(final["aggregated"]),
        failures=[
            Failure(f["label"], f["error"], int(f["occurrences"]))
            for f in final["failures"]
        ],
        exceptions=[str(line) for line in final["exceptions"]],
        actions={str(k): int(v) for k, v in final["actions"].items()},
    )


def _request_stats(entry: dict[str, Any]) -> RequestStats:
    return RequestStats(
        method=entry["method"],
        name=entry["name"],
        count=int(entry["count"]),
        failures=int(entry["failures"]),
        median_ms=_milliseconds(entry["median_ms"]),
        p95_ms=_milliseconds(entry["p95_ms"]),
        p99_ms=_milliseconds(entry["p99_ms"]),
        max_ms=_milliseconds(entry["max_ms"]),
        per_second=float(entry["per_second"]),
    )


def _milliseconds(value: float | None) -> float:
    # None where a name has no successful request to measure.
    return math.nan if value is None else float(value)


def table(results: Results, limits: Mapping[str, float]) -> str:
    """One line per request name: count, failures, median, p95, p99, max."""
    width = max([len(s.label) for s in results.requests] + [len(AGGREGATED)])
    header = (
        f"{'request':<{width}}  {'count':>6} {'fails':>5} {'req/s':>6}"
        f" {'median':>7} {'p95':>6} {'p99':>6} {'max':>6}  p99 limit (ms)"
    )
    lines = [header, "-" * len(header)]
    for stats in sorted(results.requests, key=lambda s: (s.name, s.method)):
        limit = limits.get(stats.label, limits[AGGREGATED])
        shown = f"{limit:>5.0f}" if stats.is_action else "    —"
        lines.append(_line(stats, width) + f"  {shown}")
    if results.aggregated is not None:
        lines += ["-" * len(header), _line(results.aggregated, width)]
    return "\n".join(lines)


def _line(stats: RequestStats, width: int) -> str:
    label = stats.label if stats.name != AGGREGATED else AGGREGATED
    return (
        f"{label:<{width}}  {stats.count:>6} {stats.failures:>5}"
        f" {stats.per_second:>6.1f} {stats.median_ms:>7.0f} {stats.p95_ms:>6.0f}"
        f" {stats.p99_ms:>6.0f} {stats.max_ms:>6.0f}"
    )


def verdict(
    results: Results, limits: Mapping[str, float], weights: Mapping[str, int]
) -> list[str]:
    """Why the run fails the gate; empty when it passes.

    ``limits`` maps a request label to its p99 limit in milliseconds, and
    ``Aggregated`` to the limit of every request not named; ``weights`` is
    the mix's weight of each action.
    """
    reasons: list[str] = []
    if not results.requests or sum(s.count for s in results.requests) == 0:
        reasons.append("no request was made: the run measured nothing")
    elif not any(results.actions.get(a, 0) for a, w in weights.items() if w):
        # Log-ins and the app's opening pages alone (found by a trial: a
        # mix of 1,000 s pauses passed on its 14 log-ins).
        reasons.append("no action of the mix was taken: the run measured log-ins")
    labels = {s.label for s in results.requests}
    reasons += [
        f"the p99 limit for {label!r} names no request of the run (the table "
        "lists their names)"
        for label in limits
        if label != AGGREGATED and label not in labels
    ]
    for failure in results.failures:
        reasons.append(
            f"{failure.label} failed {failure.occurrences}×: {failure.error}"
        )
    reasons += [f"the scenario raised {line}" for line in results.exceptions]
    for stats in filter(lambda s: s.is_action, results.requests):
        limit = limits.get(stats.label, limits[AGGREGATED])
        if stats.p99_ms > limit:
            reasons.append(
                f"{stats.label}: p99 {stats.p99_ms:.0f} ms is over {limit:.0f} ms"
            )
    return reasons


def never_taken(results: Results, weights: Mapping[str, int]) -> list[str]:
    """The actions with a weight that the run never took: a short run may
    miss a rare one by chance, so the runner says so without failing."""
    return [a for a, w in weights.items() if w and not results.actions.get(a, 0)]


def within_slowest(value: float, slowest: float, slowest_bucket: float) -> float:
    """A percentile Locust gave as ``value``, a bucket of its rounded times:
    in the slowest request's bucket, that request's exact time, else as it is.

    Found by a trial: a line of a few requests whose slowest took 504 ms was
    given a p99 of 500 and passed a 500 ms limit. (Used by the locustfile.)
    """
    return float(slowest) if value >= slowest_bucket else float(value)
