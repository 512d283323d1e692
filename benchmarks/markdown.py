"""docs/benchmarks.md from one run's results (benchmarks/report.py).

Every target of issue 4 gets one row: the figure, the target, the ratio
that makes the figure comparable across machines, a verdict, and for a miss
what the run measured that limits it. Then the tables behind the rows and
the raw outputs.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.drivers import Capacity, OpenLoop
    from benchmarks.report import Endpoint, Options, Results


@dataclass
class Row:
    what: str
    target: str
    measured: str
    met: bool | None
    limit: str = ""


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _num(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{unit}"


def _cpu_limit(capacity: Capacity, endpoint: Endpoint | None = None) -> str:
    """What a saturated run's CPU says: where it went, and how much per request."""
    parts = []
    if endpoint is not None and endpoint.profile:
        top = list(endpoint.profile.items())[:3]
        parts.append("its CPU went to " + ", ".join(f"{n} {v:.0%}" for n, v in top))
    parts.append(
        f"the server used {capacity.server_cores:.2f} cores at "
        f"{capacity.cpu_ms_per_request:.2f} ms of CPU per request "
        f"(the machine, the load generator included: "
        f"{capacity.machine_cores:.2f} cores)"
    )
    return "; ".join(parts)


def _p99(endpoint: Endpoint | None, level: float) -> float | None:
    if endpoint is None or level not in endpoint.levels:
        return None
    return endpoint.levels[level].p99_ms


def target_rows(results: Results) -> list[Row]:
    e = results.endpoints
    b0, b1 = e.get("B0"), e.get("B1")
    rows: list[Row] = []

    def throughput_row(
        name: str, base: Endpoint | None, share: float, what: str
    ) -> None:
        mine = e.get(name)
        if mine is None or base is None:
            rows.append(
                Row(what, f"≥ {share:.0%} of {base and base.name}", "n/a", None)
            )
            return
        ratio = mine.capacity.per_second / base.capacity.per_second
        rows.append(
            Row(
                what,
                f"≥ {share:.2f} × {base.name}",
                f"{mine.capacity.per_second:,.0f}/s = {ratio:.2f} × {base.name} "
                f"({base.capacity.per_second:,.0f}/s)",
                ratio >= share,
                "" if ratio >= share else _cpu_limit(mine.capacity, mine),
            )
        )

    def p99_row(name: str, limit_ms: float) -> None:
        p99 = _p99(e.get(name), 0.5)
        endpoint = e.get(name)
        rate = (
            endpoint.levels[0.5].rate if endpoint and 0.5 in endpoint.levels else None
        )
        met = None if p99 is None else p99 <= limit_ms
        rows.append(
            Row(
                f"{name}: p99 at 50% load",
                f"≤ {limit_ms:g} ms",
                f"{_num(p99, '.1f', ' ms')} at {_num(rate)}/s"
                + (
                    " ⚠ (answers fell behind the rate)"
                    if endpoint
                    and 0.5 in endpoint.levels
                    and _fell_behind(endpoint.levels[0.5])
                    else ""
                ),
                met,
                "" if met or endpoint is None else _latency_limit(endpoint),
            )
        )

    throughput_row("home feed", b1, 0.5, "home feed, warm: throughput")
    p99_row("home feed", 10)
    home = e.get("home feed")
    queries = home.queries_per_request if home else None
    rows.append(
        Row(
            "home feed, warm: database queries per request",
            "≤ 0.01",
            _num(queries, ".3f"),
            None if queries is None else queries <= 0.01,
        )
    )
    hits = home.cache_hit_ratio if home else None
    rows.append(
        Row(
            "home feed, warm: cache hit ratio",
            "≥ 99%",
            _num(None if hits is None else hits * 100, ".2f", "%"),
            None if hits is None else hits >= 0.99,
        )
    )
    for name in ("post", "profile"):
        throughput_row(name, b1, 0.8, f"{name} read, cached: throughput")
        p99_row(name, 5)
    throughput_row("full stack", b0, 0.65, "middleware: full-stack route throughput")
    rows.append(_mix_row(results))
    rows += _freshness_rows(results)
    rows += _offline_rows(results)
    rows.append(_two_workers_row(results))
    return rows


def _latency_limit(endpoint: Endpoint) -> str:
    at = endpoint.levels.get(0.5)
    if at is None:
        return ""
    late = at.result.get("driver_lateness_ms", {}).get("p99")
    p50 = at.result.get("latency_ms", {}).get("p50")
    cores = at.server_cpu_seconds / max(at.result.get("elapsed_seconds", 1), 1e-9)
    sent = at.result.get("sent", 0)
    # At half the capacity a request may cost more than at saturation, where
    # requests arrive together and their store calls share round trips.
    here = f"{1000 * at.server_cpu_seconds / sent:.2f} ms in this run, " if sent else ""
    return (
        f"median {_num(p50, '.1f', ' ms')}; the server used {cores:.2f} cores; "
        f"CPU per request {here}{endpoint.capacity.cpu_ms_per_request:.2f} ms "
        f"at saturation; "
        f"the driver itself was up to {_num(late, '.1f', ' ms')} late (p99)"
    )


def _mix_row(results: Results) -> Row:
    run = results.mix_open
    if run is None:
        return Row("whole user mix, both cores", "≥ 2,500/s, p99 ≤ 50 ms", "n/a", None)
    achieved = float(run.result.get("achieved_per_second", 0.0))
    at_target = run.rate >= 2500
    met = at_target and achieved >= 0.98 * run.rate
    met = met and run.p99_ms <= 50 and run.errors == 0
    capacity = results.mix_two
    measured = (
        f"{achieved:,.0f}/s answered of {run.rate:,.0f}/s sent, p99 "
        f"{run.p99_ms:,.1f} ms, {run.errors} errors"
    )
    if not at_target and capacity is not None:
        measured = (
            f"capacity {capacity.per_second:,.0f}/s = "
            f"{capacity.per_second / 2500:.2f} × the target; at half of it "
            f"({run.rate:,.0f}/s) p99 {run.p99_ms:,.1f} ms, {run.errors} errors"
        )
    limit = ""
    if not met and capacity is not None:
        limit = "with two server processes, at saturation, " + _cpu_limit(capacity)
        top = list(mix_cpu_shares(results).items())[:3]
        if top:
            limit += "; its server CPU goes to " + ", ".join(
                f"{action} {share:.0%}" for action, share in top
            )
            limit += " (each action measured alone, in the user mix section)"
    return Row(
        "whole user mix, both cores",
        "≥ 2,500/s with p99 ≤ 50 ms, no errors",
        measured,
        met,
        limit,
    )


def _freshness_rows(results: Results) -> list[Row]:
    fresh = results.freshness
    rows = []
    for what, target, key, limit_ms in (
        ("photo upload: accepted, server time", "p99 ≤ 50 ms", "upload", 50),
        ("photo upload: thumbnails ready", "p99 ≤ 1 s", "ready", 1000),
        (
            "fan-out: post visible in all active followers' feeds",
            "p99 ≤ 1 s",
            "fanout",
            1000,
        ),
    ):
        p99 = fresh.get(f"{key}_p99_ms")
        rows.append(
            Row(
                what,
                target,
                fresh.get(f"{key}_measured", "n/a"),
                None if p99 is None else p99 <= limit_ms,
                fresh.get(f"{key}_limit", ""),
            )
        )
    return rows


_PHOTO = re.compile(r"takes (\d+) ms of CPU at least and (\d+) ms in the median")
_FANOUT = re.compile(r"fan-out \(Timelines\.add\)\s+\d+\s+[\d.]+\s+([\d,]+)")
_FANOUT_RATIO = re.compile(r"fan-out / baseline: ([\d.]+)")


def _offline_rows(results: Results) -> list[Row]:
    rows = []
    photo = _PHOTO.search(results.offline.get("photo processing", ""))
    least = float(photo.group(1)) if photo else None
    rows.append(
        Row(
            "photo processing, 12 MP, three sizes",
            "≤ 100 ms of CPU",
            "n/a"
            if photo is None
            else f"{photo.group(1)} ms least, {photo.group(2)} ms median round",
            None if least is None else least <= 100,
            "" if least is None or least <= 100 else "see the step table below",
        )
    )
    text = results.offline.get("fan-out", "")
    rate = _FANOUT.search(text)
    ratio = _FANOUT_RATIO.search(text)
    inserts = float(rate.group(1).replace(",", "")) if rate else None
    rows.append(
        Row(
            "fan-out: timeline inserts per second",
            "≥ 100,000/s",
            "n/a"
            if rate is None
            else f"{rate.group(1)}/s = {ratio.group(1) if ratio else '?'} × "
            "plain pipelined ZADD in the same run",
            None if inserts is None else inserts >= 100_000,
            _fanout_limit(text, inserts),
        )
    )
    return rows


_FANOUT_PLAIN = re.compile(r"baseline \(plain writes\)\s+\d+\s+[\d.]+\s+([\d,]+)")
_FANOUT_CPU = re.compile(r"CPU per insert: (.+)")
_FANOUT_LOAD = re.compile(r"load average: ([\d.]+) before, ([\d.]+) after")


def _fanout_limit(text: str, inserts: float | None) -> str:
    """What the fan-out benchmark measured beside its rate, when it missed."""
    plain = _FANOUT_PLAIN.search(text)
    if inserts is None or inserts >= 100_000 or plain is None:
        return ""
    rate = float(plain.group(1).replace(",", ""))
    limit = f"plain pipelined ZADDs into the same timelines reach {rate:,.0f}/s"
    if rate < 100_000:
        limit += " on this machine, itself under the target"
    cpu = _FANOUT_CPU.search(text)
    if cpu:
        limit += f"; CPU per insert: {cpu.group(1)}"
    load = _FANOUT_LOAD.search(text)
    if load:
        limit += f"; load average {load.group(1)} to {load.group(2)}"
    return limit


def mix_pairs(results: Results) -> list[tuple[Capacity, Capacity]]:
    """The mix's capacity with one process and with two, round by round."""
    one, two = results.mix_one, results.mix_two
    first = [] if one is None or two is None else [(one, two)]
    return first + results.mix_rounds


def _two_workers_row(results: Results) -> Row:
    one, two = results.mix_one, results.mix_two
    if one is None or two is None:
        return Row("two server processes against one", "≥ 1.4 ×", "n/a", None)
    pairs = mix_pairs(results)
    each = [b.per_second / a.per_second for a, b in pairs]
    # The median round: one pair of runs moved from 1.04 to 2.54 × between
    # runs of one commit.
    ratio = statistics.median(each)
    rounds = (
        f", the median of {len(each)} rounds of one process then two ("
        + ", ".join(f"{r:.2f}" for r in each)
        + " ×); the first"
        if len(each) > 1
        else ""
    )
    home = results.endpoints.get("home feed")
    home_ratio = (
        results.home_two.per_second / home.capacity.per_second
        if results.home_two is not None and home is not None
        else math.nan
    )
    return Row(
        "two server processes against one (user mix)",
        "≥ 1.4 ×",
        f"{ratio:.2f} ×{rounds} ({one.per_second:,.0f}/s → {two.per_second:,.0f}/s); "
        f"home feed alone {home_ratio:.2f} ×"
        + (_roles_text(results.home_two) if results.home_two is not None else ""),
        ratio >= 1.4,
        ""
        if ratio >= 1.4
        else f"with two processes {_cpu_limit(two)}; the machine has 2 cores, "
        "which the server shares with PostgreSQL, Redis, the relay, the job "
        "worker and wrk" + _roles_text(two) + _per_request_rise(results),
    )


def _per_request_rise(results: Results) -> str:
    """How much more CPU a request took with two processes than with one,
    ours and B0's: the part of the shortfall that is not cores."""
    one, two = results.mix_one, results.mix_two
    if one is None or two is None or not one.cpu_ms_per_request:
        return ""
    rise = two.cpu_ms_per_request / one.cpu_ms_per_request
    # At one process's cost per request, the cores two used serve this many.
    cores = two.server_cores
    at_one_cost = 1000 * cores / one.cpu_ms_per_request / one.per_second
    text = (
        f"; a request of the mix took {one.cpu_ms_per_request:.2f} ms of server "
        f"CPU with one process and {two.cpu_ms_per_request:.2f} ms with two "
        f"({rise:.2f} ×): at one process's cost, the {cores:.2f} cores the two "
        f"used would have served {at_one_cost:.2f} × one process's requests"
    )
    b0 = results.endpoints.get("B0")
    if results.b0_two is not None and b0 is not None and b0.capacity.per_second:
        b0_one, b0_two = b0.capacity, results.b0_two
        text += (
            f"; B0 (a constant answered before any middleware) gains "
            f"{b0_two.per_second / b0_one.per_second:.2f} × from a second "
            f"process here, its CPU per request {b0_one.cpu_ms_per_request:.3f} "
            f"→ {b0_two.cpu_ms_per_request:.3f} ms"
        )
    return text


def _endpoint_table(endpoints: dict[str, Endpoint], base: Capacity | None) -> list[str]:
    lines = [
        "| endpoint | capacity /s | × B0 | CPU ms/request | errors | p50 @50% "
        "| p99 @50% | p99 @80% | SQL/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, endpoint in endpoints.items():
        cap = endpoint.capacity
        ratio = cap.per_second / base.per_second if base else math.nan
        half = endpoint.levels.get(0.5)
        lines.append(
            f"| {name} | {cap.per_second:,.0f} | {ratio:.2f} | "
            f"{cap.cpu_ms_per_request:.2f} | {cap.errors} | "
            f"{_level(half, 'p50')} | {_level(half, 'p99')} | "
            f"{_level(endpoint.levels.get(0.8), 'p99')} | "
            f"{_num(endpoint.queries_per_request, '.2f')} |"
        )
    return lines


def _level(run: OpenLoop | None, point: str) -> str:
    if run is None:
        return "–"
    value = run.result.get("latency_ms", {}).get(point)
    errors = f" ({run.errors} err)" if run.errors else ""
    return _num(value, ".1f", " ms") + errors + (" ⚠" if _fell_behind(run) else "")


def _fell_behind(run: OpenLoop) -> bool:
    """The answers did not keep up with the arrival rate: past capacity in
    that run (the machine's other work can be the cause), so its latency
    measures a growing queue."""
    answered = float(run.result.get("achieved_per_second", 0.0))
    return answered < 0.97 * run.rate


def _open_loop_details(endpoints: dict[str, Endpoint]) -> list[str]:
    lines = [
        "| endpoint | load | rate /s | answered /s | p50 | p90 | p99 | p99.9 | max "
        "| errors | server cores | driver late p99 | driver cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for name, endpoint in endpoints.items():
        for level, run in endpoint.levels.items():
            latency = run.result.get("latency_ms", {})
            late = run.result.get("driver_lateness_ms", {}).get("p99")
            lines.append(
                f"| {name} | {level:.0%} | {run.rate:,.0f} | "
                f"{run.result.get('achieved_per_second', 0):,.0f}"
                f"{' ⚠' if _fell_behind(run) else ''} | "
                + " | ".join(
                    _num(latency.get(p), ".1f")
                    for p in ("p50", "p90", "p99", "p999", "max")
                )
                + f" | {run.errors} | {_cores(run, run.server_cpu_seconds)} | "
                f"{_num(late, '.1f')} | "
                f"{_cores(run, run.result.get('driver_cpu_seconds', math.nan))} |"
            )
    return lines


def _cores(run: OpenLoop, cpu_seconds: float) -> str:
    elapsed = float(run.result.get("elapsed_seconds", 0.0))
    return _num(cpu_seconds / elapsed if elapsed else None, ".2f")


def render(options: Options, results: Results, command: str) -> str:
    from benchmarks.report import READERS, machine_description

    rows = target_rows(results)
    met = sum(1 for r in rows if r.met)
    measured = sum(1 for r in rows if r.met is not None)
    missed = [r for r in rows if r.met is False]
    b0 = results.endpoints.get("B0")
    out: list[str] = [
        "# Benchmarks",
        "",
        f"Made by `{command}` on {results.started}, in {results.seconds / 60:.0f} "
        "minutes, on this machine: " + machine_description() + ".",
        f"Load average before {results.load_before[0]:.2f}, after "
        f"{results.load_after[0]:.2f}. Data set: {options.users:,} accounts "
        f"(`petpal seed --users {options.users}`), {results.dataset}.",
        "",
        "Every figure comes from this one run. Throughputs are closed-loop "
        f"(wrk, one thread, 32 connections, {options.seconds:g} s after a 3 s "
        "warm-up) and are also given as ratios to the baselines measured in the "
        "same run: B0 (the same server answering a constant before any "
        "middleware), B1 (B0 plus one Redis GET) and B2 (B0 plus one PostgreSQL "
        "primary-key select). Latencies are open-loop "
        f"(`benchmarks/openloop.py`, {options.open_seconds:g} s at a fixed "
        "arrival rate of 50% and 80% of that endpoint's own capacity, each "
        "latency counted from the time its request was due), never from a "
        "saturation run. One server process unless a row says otherwise; the "
        "load generator, PostgreSQL, Redis, RabbitMQ, the relay and a one-process "
        "job worker share the same two cores.",
        "",
        f"## Targets: {met} of {measured} measured met"
        + (f" ({len(rows) - measured} not measured)" if measured < len(rows) else ""),
        "",
        "| what | target | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    out += [
        f"| {r.what} | {r.target} | {r.measured} | {_verdict(r.met)} |" for r in rows
    ]
    if missed:
        out += ["", "### What limits the missed targets", ""]
        out += [f"- **{r.what}**: {r.limit or 'see the tables below'}" for r in missed]
    out += [
        "",
        "## Endpoints, one server process",
        "",
        f"Each endpoint's requests cycle over {READERS} logged-in accounts (home "
        "feeds, and the posts and profiles those feeds showed).",
        "",
        *_endpoint_table(results.endpoints, b0.capacity if b0 else None),
        "",
        "Open-loop runs in full (milliseconds). ⚠ marks a run whose answers "
        "fell behind the arrival rate: past capacity during that run, whether "
        "the endpoint's or the machine's, so its latency measures a growing "
        "queue. The slowest answer in each second of every run is in the raw "
        "results of `benchmarks/openloop.py`.",
        "",
        *_open_loop_details(results.endpoints),
    ]
    profiled = {n: e for n, e in results.endpoints.items() if e.profile}
    if profiled:
        out += ["", *_profile_table(profiled)]
    if results.naive:
        out += [
            "",
            "## The naive path: no cache, photos processed in the request",
            "",
            "The same server with `PETPAL_CACHE_ENABLED=false` and "
            "`PETPAL_MEDIA_PROCESS_INLINE=true`.",
            "",
            *_naive_table(results),
        ]
    out += _mix_section(results)
    out += _freshness_section(results)
    for name, text in results.offline.items():
        out += ["", f"## {name} (raw output)", "", "```", text.rstrip(), "```"]
    out += [
        "",
        "## Reproducing",
        "",
        f"    {command}",
        "",
        "It needs wrk (Debian: `apt-get install wrk`) and PostgreSQL, Redis and "
        "RabbitMQ at the test suite's addresses; it keeps the seeded database "
        f"`petpal_bench_u{options.users}` for the next run (`--fresh` seeds "
        "again). `python3 dev.py bench --help` lists the options.",
        "",
    ]
    return "\n".join(out)


def _profile_table(endpoints: dict[str, Endpoint]) -> list[str]:
    groups: list[str] = []
    for endpoint in endpoints.values():
        groups += [g for g in endpoint.profile if g not in groups]
    names = list(endpoints)
    lines = [
        "Where the server's CPU went at saturation (py-spy, 100 samples a second "
        "for 6 s, each sample counted for the code at the top of the stack):",
        "",
        "| code | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for group in groups:
        cells = [f"{endpoints[n].profile.get(group, 0.0):.0%}" for n in names]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def _naive_table(results: Results) -> list[str]:
    lines = [
        "| endpoint | cached /s | naive /s | cached ÷ naive | naive p99 @50% "
        "| naive SQL/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, naive in results.naive.items():
        cached = results.endpoints.get(name)
        fast = cached.capacity.per_second if cached else math.nan
        lines.append(
            f"| {name} | {fast:,.0f} | {naive.capacity.per_second:,.0f} | "
            f"{fast / naive.capacity.per_second:.1f} × | "
            f"{_level(naive.levels.get(0.5), 'p99')} | "
            f"{_num(naive.queries_per_request, '.2f')} |"
        )
    return lines


def _roles_text(run: Capacity) -> str:
    if not run.cores_by_role:
        return ""
    parts = [f"{role} {cores:.2f}" for role, cores in run.cores_by_role.items()]
    return " (cores: " + ", ".join(parts) + ")"


def mix_cpu_shares(results: Results) -> dict[str, float]:
    """Each action's share of the mix's server CPU, largest first: its share
    of the requests times what one of them cost when measured alone."""
    spent = {
        action: results.mix_shares[action] * run.cpu_ms_per_request
        for action, run in results.mix_actions.items()
        if action in results.mix_shares
    }
    total = sum(spent.values())
    if not total:
        return {}
    ordered = sorted(spent.items(), key=lambda item: item[1], reverse=True)
    return {action: cpu / total for action, cpu in ordered}


def _mix_actions_table(results: Results) -> list[str]:
    shares = mix_cpu_shares(results)
    if not shares:
        return []
    lines = [
        "",
        "Each action alone (its requests cycled, one server process, closed "
        "loop): what one request costs the server, and the whole machine but "
        "the load generator (the relay, the job worker, PostgreSQL, Redis and "
        "RabbitMQ included). Weighted by the action's share of the mix's "
        "requests, that is where the mix's server CPU goes.",
        "",
        "| action | share of requests | requests /s alone | server CPU ms/request "
        "| machine CPU ms/request | share of the mix's server CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for action, share in shares.items():
        run = results.mix_actions[action]
        machine = _num(run.system_cpu_ms_per_request, ".2f")
        lines.append(
            f"| {action} | {results.mix_shares[action]:.0%} | {run.per_second:,.0f} "
            f"| {run.cpu_ms_per_request:.2f} | {machine} "
            f"| {share:.0%} | {run.errors} |"
        )
    return lines


def _mix_section(results: Results) -> list[str]:
    if results.mix_one is None:
        return []
    lines = [
        "",
        "## The user mix",
        "",
        "The load test's mix (`loadtest/mix.toml`) without uploads, as single "
        "requests: feed pages and scrolls, posts with their comments, profiles "
        "with their posts and pets, pets, trending, the public feed, hashtags, "
        "Pet of the Day, likes and unlikes, comments, follows and unfollows.",
        *(
            [
                "",
                "The first capacities come from the stacks the rest of the "
                "report uses, minutes apart; each further round starts a stack "
                "of one process, then one of two, back to back, and measures "
                "only the mix. The ratio of two processes to one is the "
                "median round's.",
            ]
            if results.mix_rounds
            else []
        ),
        "",
        "| run | requests /s | CPU ms/request | server cores | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    runs = [
        ("capacity, one process", results.mix_one),
        ("capacity, two processes", results.mix_two),
    ]
    for number, (one, two) in enumerate(results.mix_rounds, start=2):
        runs += [
            (f"round {number}: one process", one),
            (f"round {number}: two processes", two),
        ]
    for label, run in runs:
        if run is not None:
            lines.append(
                f"| {label} | {run.per_second:,.0f} | {run.cpu_ms_per_request:.2f} | "
                f"{run.server_cores:.2f} | {run.errors} |"
            )
    lines += _mix_actions_table(results)
    runs = [
        (label, run)
        for label, run in (
            ("one process", results.mix_one),
            ("two processes", results.mix_two),
        )
        if run is not None and run.cores_by_role
    ]
    if runs:
        roles = list(
            dict.fromkeys(role for _, run in runs for role in run.cores_by_role)
        )
        lines += [
            "",
            "Cores each part of the system used during those capacity runs "
            "(from /proc; the machine has 2):",
            "",
            "| part | " + " | ".join(label for label, _ in runs) + " |",
            "| --- |" + " ---: |" * len(runs),
        ]
        for role in roles:
            cells = [f"{run.cores_by_role.get(role, 0.0):.2f}" for _, run in runs]
            lines.append(f"| {role} | " + " | ".join(cells) + " |")
    if results.mix_open is not None:
        latency = results.mix_open.result.get("latency_ms", {})
        lines += [
            "",
            f"Open loop at {results.mix_open.rate:,.0f}/s, two processes: "
            f"{results.mix_open.result.get('achieved_per_second', 0):,.0f}/s answered, "
            f"p50 {_num(latency.get('p50'), '.1f')} ms, "
            f"p99 {_num(latency.get('p99'), '.1f')} ms, "
            f"max {_num(latency.get('max'), '.1f')} ms, "
            f"statuses {results.mix_open.result.get('statuses')}.",
        ]
    return lines


def _freshness_section(results: Results) -> list[str]:
    text: Any = results.freshness.get("text")
    naive: Any = results.naive_upload.get("text")
    lines: list[str] = []
    if text:
        lines += ["", "## Uploads and fan-out, end to end", "", str(text)]
    if naive:
        lines += ["", "Uploads on the naive path:", "", str(naive)]
    return lines
