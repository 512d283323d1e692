"""Locust's CSV results, the table the runner prints, and the gate's verdict.

Locust writes ``<prefix>_stats.csv`` (one row per request name, then an
``Aggregated`` row), ``<prefix>_failures.csv`` and ``<prefix>_exceptions.csv``
(errors raised inside the scenarios, which are not request failures and would
otherwise pass unseen). Its percentiles are approximations: response times
are kept to the millisecond below 100 ms, rounded to 10 ms up to 1 s, to
100 ms up to 10 s and to the second above.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtest.mix import BASELINE_NAME

AGGREGATED = "Aggregated"


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


def read_results(prefix: Path) -> Results:
    """The results Locust wrote with ``--csv <prefix>``."""
    rows = _rows(Path(f"{prefix}_stats.csv"))
    stats = [_request_stats(row) for row in rows]
    return Results(
        requests=[s for s in stats if s.name != AGGREGATED],
        aggregated=next((s for s in stats if s.name == AGGREGATED), None),
        failures=[
            Failure(
                f"{row['Method']} {row['Name']}",
                row["Error"],
                int(row["Occurrences"]),
            )
            for row in _rows(Path(f"{prefix}_failures.csv"))
        ],
        exceptions=[
            f"{row['Count']}× {row['Message']}"
            for row in _rows(Path(f"{prefix}_exceptions.csv"))
        ],
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _request_stats(row: dict[str, str]) -> RequestStats:
    return RequestStats(
        method=row["Type"],
        name=row["Name"],
        count=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        median_ms=_milliseconds(row["Median Response Time"]),
        p95_ms=_milliseconds(row["95%"]),
        p99_ms=_milliseconds(row["99%"]),
        max_ms=_milliseconds(row["Max Response Time"]),
        per_second=float(row["Requests/s"]),
    )


def _milliseconds(value: str) -> float:
    # "N/A" where a name has no successful request to measure.
    return float(value) if value not in ("", "N/A") else math.nan


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


def verdict(results: Results, limits: Mapping[str, float]) -> list[str]:
    """Why the run fails the gate; empty when it passes.

    ``limits`` maps a request label to its p99 limit in milliseconds, and
    ``Aggregated`` to the limit of every request not named.
    """
    reasons: list[str] = []
    if not results.requests or sum(s.count for s in results.requests) == 0:
        reasons.append("no request was made: the run measured nothing")
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
