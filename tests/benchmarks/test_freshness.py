"""The freshness benchmark's arithmetic: its schedule, percentiles and the
server histograms it reads (the measurement itself needs a running stack)."""

from __future__ import annotations

import math

import pytest
from benchmarks.freshness import (
    Buckets,
    Latency,
    ServerTime,
    percentile,
    read_histogram,
    schedule,
)
from prometheus_client import CollectorRegistry, Histogram, generate_latest

NAME = "petpal_http_request_duration_seconds"
UPLOADS = {"method": "POST", "route": "/api/v1/media"}


def metrics_text() -> str:
    """What GET /metrics shows for the upload route (two statuses) and another."""
    registry = CollectorRegistry()
    seconds = Histogram(
        NAME,
        "latency",
        ["method", "route", "status"],
        buckets=(0.025, 0.05, 0.1),
        registry=registry,
    )
    accepted = seconds.labels("POST", "/api/v1/media", "202")
    for value in [0.01] * 80 + [0.04] * 18 + [0.09] * 2:
        accepted.observe(value)
    seconds.labels("POST", "/api/v1/media", "413").observe(3.0)
    for _ in range(5):
        seconds.labels("GET", "/api/v1/media/{media_id}", "200").observe(0.02)
    return generate_latest(registry).decode()


def test_the_schedule_is_fixed_in_advance_at_the_rate() -> None:
    assert schedule(4, 1) == [0, 0.25, 0.5, 0.75]
    assert len(schedule(4, 30)) == 120
    assert len(schedule(3, 0.1)) == 0
    with pytest.raises(ValueError, match="positive"):
        schedule(0, 10)


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))
    # A pair never seen is infinite: with 2 of 100, the p99 is too.
    assert percentile([*range(98), math.inf, math.inf], 0.99) == math.inf


def test_latency_is_in_milliseconds() -> None:
    latency = Latency.of([0.010, 0.020, 0.030])
    assert latency == Latency(count=3, p50_ms=20.0, p99_ms=30.0, max_ms=30.0)
    assert math.isnan(Latency.of([]).p99_ms)


def test_a_route_is_summed_over_its_statuses() -> None:
    uploads = read_histogram(metrics_text(), NAME, UPLOADS)
    assert uploads.count == 101
    assert uploads.total_seconds == pytest.approx(4.7)
    assert uploads.buckets == ((0.025, 80), (0.05, 98), (0.1, 100), (math.inf, 101))
    assert read_histogram(metrics_text(), NAME, {"route": "/nowhere"}).count == 0


def test_bucket_quantiles_are_upper_bounds() -> None:
    uploads = read_histogram(metrics_text(), NAME, UPLOADS)
    assert uploads.quantile(0.5) == 0.025
    assert uploads.quantile(0.97) == 0.05
    assert uploads.quantile(0.99) == 0.1
    assert uploads.quantile(1.0) == math.inf
    assert uploads.share_within(0.05) == pytest.approx(98 / 101)
    with pytest.raises(ValueError, match="bucket bound"):
        uploads.share_within(0.03)


def test_what_happened_between_two_scrapes() -> None:
    before = Buckets(((0.025, 10), (0.05, 10), (0.1, 10), (math.inf, 11)), 11, 2.9)
    since = read_histogram(metrics_text(), NAME, UPLOADS).minus(before)
    assert since.count == 90
    assert since.buckets == ((0.025, 70), (0.05, 88), (0.1, 90), (math.inf, 90))
    server = ServerTime.of(since)
    assert server.count == 90
    assert server.mean_ms == pytest.approx(20.0)
    assert server.p99_at_most_ms == pytest.approx(100.0)
    assert not server.target_met
    assert math.isnan(ServerTime.of(since.minus(since)).mean_ms)
