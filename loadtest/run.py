"""Load-test PetPal: a private server, a seeded data set, Locust, a verdict.

    python3 dev.py loadtest [--users 30] [--duration 45] [--mode distributed] …

1. Makes a temporary data directory — in distributed mode also a PostgreSQL
   database and a Redis key prefix of its own — then migrates and seeds it.
2. Starts ``petpal serve`` on a free loopback port with rate limits off
   (one address would otherwise hit the log-in limit at once) and waits for
   ``/readyz``; prepares the data set's accounts.
3. Runs Locust headless, as a separate process (it patches its process with
   gevent), for a bounded time.
4. Stops the server by its process id and removes everything it made — also
   when a step fails or the run is interrupted.
5. Prints a table per request name and fails when any request failed, the
   scenarios raised, or the p99 of any request is over its limit.

Exit status: 0 passed, 1 the gate failed, 2 the run could not be made.
Locust measures on the client: its times include the client's own share of
the CPU, which it splits with the server on a small machine.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtest.dataset import (
    Dataset,
    RunError,
    parse_dataset,
    prepare_accounts,
    private_database,
    private_key_prefix,
    run_tag,
)
from loadtest.mix import (
    ACCOUNT_COUNT_ENV,
    ACCOUNTS_ENV,
    BASELINE_NAME,
    MIX_ENV,
    PASSWORD_ENV,
    ROOT,
    SEED_ENV,
    WEIGHTS_ENV,
    Mix,
    MixError,
    describe,
    load_mix,
)
from loadtest.stats import (
    AGGREGATED,
    FINAL_RESULTS_ENV,
    Results,
    never_taken,
    read_results,
    table,
    verdict,
)

BIN = Path(sys.executable).parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

# The data set of every run unless --dataset says otherwise: issue 4's CI size,
# 20,000 generated accounts (`petpal seed --users 20000`, about half a minute).
DEFAULT_DATASET = "scale:20000"
# The gate: no request may take longer than this at the 99th percentile.
DEFAULT_P99_MS = 500.0

# Where distributed mode makes its own database and key prefix unless
# PETPAL_DATABASE_URL / PETPAL_REDIS_URL name servers to use as they are; the
# same variables and defaults as the test suite (README, "Testing in both modes").
DEFAULT_ADMIN_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Settings that would point the embedded run at someone else's data.
ENGINE_SETTINGS = (
    "PETPAL_DATABASE_URL",
    "PETPAL_REDIS_URL",
    "PETPAL_STORAGE_URL",
    "PETPAL_SECRET_KEY",
    "PETPAL_CACHE_KEY_PREFIX",
)

SETUP_TIMEOUT_SECONDS = 1800  # a seed of the scale data set takes minutes
READY_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20
# Beyond this share of the cores taken by other processes, the run says so.
BUSY_MACHINE = 0.25
# The bounds of a run: a person started every 100 s at the slowest, a day
# at the longest.
MIN_SPAWN_RATE = 0.01
MAX_RUN_SECONDS = 24 * 3600
# The server's longest duration (petpal.platform.settings.MAX_DURATION_SECONDS;
# the runner imports none of the server, and a test holds the two equal).
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
# Locust lets users finish the action under way for this long after the run
# time; post_photo waits for processing, so it is above that wait.
LOCUST_STOP_TIMEOUT_SECONDS = 15


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py loadtest",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--users", type=int, default=30, help="simulated people (default 30)")
    add(
        "--spawn-rate",
        type=_finite,
        default=2,
        help="people started per second (default 2; each logs in, which costs "
        "the server about 0.2 s of CPU)",
    )
    add("--duration", type=int, default=45, help="seconds of load (default 45)")
    add(
        "--p99-ms",
        type=_milliseconds,
        default=DEFAULT_P99_MS,
        help=f"p99 limit of every request (default {DEFAULT_P99_MS:g})",
    )
    add(
        "--p99-limit",
        action="append",
        default=[],
        metavar="'METHOD /route=MS'",
        help="a p99 limit for one request name, e.g. 'POST /api/v1/media=800'",
    )
    add(
        "--mode",
        choices=("embedded", "distributed"),
        default="embedded",
        help="SQLite in a temporary directory (default), or PostgreSQL and "
        "Redis: a database and key prefix of its own, or the servers "
        "PETPAL_DATABASE_URL / PETPAL_REDIS_URL name, used as they are",
    )
    add("--dataset", default=DEFAULT_DATASET, help="demo or scale:N")
    add("--mix", type=Path, help=f"a mix file instead of mix.toml (${MIX_ENV})")
    add(
        "--weights",
        help=f"weight overrides, e.g. comment=0,post_photo=5 (${WEIGHTS_ENV})",
    )
    add(
        "--access-token-ttl",
        type=_whole_seconds,
        help="the server's access-token lifetime in seconds; short, the "
        "simulated app refreshes its token during the run",
    )
    add("--results", type=Path, help="keep Locust's CSV files and the logs here")
    add("--seed", default="petpal", help="decides which account each person takes")
    options = parser.parse_args(argv)
    if options.users < 1 or options.duration < 1:
        parser.error("--users and --duration must be positive")
    # Found by a trial: a spawn rate of 1e-300 a second and a run of
    # 99,999,999,999 s were taken, and the seed began.
    if options.spawn_rate < MIN_SPAWN_RATE:
        parser.error(f"--spawn-rate is at least {MIN_SPAWN_RATE:g} a second")
    if options.duration > MAX_RUN_SECONDS:
        parser.error(f"--duration is at most {MAX_RUN_SECONDS:,} s (a day)")
    return options


# Checked as the options are read, not by Locust or the server after the
# migration and the seed (found by a trial: `--spawn-rate nan` and
# `--access-token-ttl -1` failed only then, and `--p99-ms nan` passed every
# request, a comparison with NaN being false).
def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _milliseconds(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a limit is over 0 ms, not {text!r}")
    return value


def _whole_seconds(text: str) -> int:
    digits = text.isascii() and text.isdigit()
    if not digits or not 1 <= int(text) <= MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(
            f"a whole number of seconds from 1 to {MAX_DURATION_SECONDS:,}, "
            f"not {text!r}"
        )
    return int(text)


def p99_limits(options: argparse.Namespace) -> dict[str, float]:
    limits = {AGGREGATED: float(options.p99_ms)}
    for item in options.p99_limit:
        label, equals, value = item.rpartition("=")
        label = label.strip()
        try:
            limit = _milliseconds(value)
        except argparse.ArgumentTypeError:
            equals = ""
        if not equals or not label:
            raise RunError(
                f"--p99-limit is 'METHOD /route=MS' with MS a number over 0, "
                f"not {item!r}"
            )
        # Found by a trial: each was taken without a word, and did not do
        # what it said.
        if label in limits:
            raise RunError(
                f"--p99-limit {label!r} is given twice"
                if label != AGGREGATED
                else "--p99-ms is the limit of every request not named"
            )
        if BASELINE_NAME in label:
            raise RunError(f"{BASELINE_NAME} is a yardstick, held to no limit")
        limits[label] = limit
    return limits


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # The mix and weights the environment names are this run's: Locust,
    # which runs in the repository, is given the mix's full path, and the
    # printed command names both (found by a trial: a relative
    # PETPAL_LOADTEST_MIX was the caller's file to the runner and the
    # repository's to Locust).
    if options.mix is None and os.environ.get(MIX_ENV):
        options.mix = Path(os.environ[MIX_ENV])
    if options.weights is None:
        options.weights = os.environ.get(WEIGHTS_ENV) or None
    try:
        limits = p99_limits(options)
        mix = load_mix(options.mix, options.weights)
        dataset = parse_dataset(options.dataset)
    except (RunError, MixError, ValueError) as exc:
        print(f"load test not run: {exc}", file=sys.stderr)
        return 2
    print(f"load test: {reproduce(options)}", flush=True)
    print(describe(mix), flush=True)
    # Stopped from outside (CI cancelling, `kill`): clean up as after Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with ExitStack() as cleanup:
            results, summary = run(options, mix, dataset, cleanup)
    except (RunError, subprocess.SubprocessError, OSError, httpx.HTTPError) as exc:
        print(f"\nLOAD TEST NOT MADE: {exc}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nload test interrupted; everything it started is stopped", flush=True)
        return 130
    print("\n" + table(results, limits))
    print(summary)
    missed = never_taken(results, mix.weights)
    if missed:
        print(
            f"NOTE: never taken in this run, so not measured: {', '.join(missed)}"
            " (rare in the mix, or the run too short for them)"
        )
    reasons = verdict(results, limits, mix.weights)
    if reasons:
        print("\nLOAD TEST FAILED:")
        print("\n".join(f"  - {reason}" for reason in reasons), flush=True)
        return 1
    print(
        "\nLOAD TEST PASSED: no request failed and every p99 is within its limit",
        flush=True,
    )
    return 0


def reproduce(options: argparse.Namespace) -> str:
    """The command that repeats this run."""
    words = [
        "python3 dev.py loadtest",
        f"--users {options.users}",
        f"--spawn-rate {options.spawn_rate:g}",
        f"--duration {options.duration}",
        f"--mode {options.mode}",
        f"--dataset {options.dataset}",
        f"--p99-ms {options.p99_ms:g}",
    ]
    words += [f"--p99-limit {shlex.quote(item)}" for item in options.p99_limit]
    if options.access_token_ttl:
        words.append(f"--access-token-ttl {options.access_token_ttl}")
    if options.mix:
        words.append(f"--mix {shlex.quote(str(options.mix))}")
    if options.weights:
        words.append(f"--weights {shlex.quote(options.weights)}")
    # Which account each person takes (found by a trial: left out).
    words.append(f"--seed {shlex.quote(options.seed)}")
    if options.results:
        words.append(f"--results {shlex.quote(str(options.results))}")
    return " ".join(words)


def run(
    options: argparse.Namespace, mix: Mix, dataset: Dataset, cleanup: ExitStack
) -> tuple[Results, str]:
    work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="petpal-lt-")))
    # Absolute: Locust runs in the repository, the caller maybe elsewhere.
    results_dir = (options.results or work / "results").resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    # A kept folder holds this run's files alone, also when this run is not
    # made (found by a trial: the last run's results stayed beside its error).
    for name in RESULT_FILES:
        (results_dir / name).unlink(missing_ok=True)
    env = server_environment(options, work / "data", cleanup)

    started = time.monotonic()
    _petpal(env, "migrate")
    _petpal(env, *dataset.seed_args)
    serve_env = dict(env)
    if options.access_token_ttl:
        # For the server only: the seed, too, logs in and works with a token.
        serve_env["PETPAL_ACCESS_TOKEN_TTL_SECONDS"] = str(options.access_token_ttl)
    server = cleanup.enter_context(serving(serve_env, results_dir / "server.log"))
    print(prepare_accounts(server.url, dataset, ROOT), flush=True)
    print(f"data set {dataset.spec} ready in {time.monotonic() - started:.0f} s")

    prefix = results_dir / "locust"
    final = results_dir / "locust_final.json"
    locust_log = results_dir / "locust.log"
    with measuring_cpu(server) as cpu:
        code = run_locust(options, dataset, server.url, prefix, final, locust_log)
    if server.process.poll() is not None:
        raise RunError(f"the server stopped during the run; see {results_dir}")
    # The server's own view (latency per route, SQL per request), to set
    # beside Locust's, which includes the time a request waits for the client.
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)
    (results_dir / "metrics.txt").write_text(metrics.text)
    results = final_results(final, code, locust_log)
    return results, _summary(options, results, cpu)


# What a run writes into its results folder.
RESULT_FILES = (
    "locust_final.json",
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust_failures.csv",
    "locust_exceptions.csv",
    "locust.log",
    "server.log",
    "metrics.txt",
)


def final_results(final: Path, code: int, locust_log: Path) -> Results:
    """What Locust measured, from the file its quit wrote; RunError when
    there is none, or when its exit status says what the results do not."""
    try:
        results = read_results(final)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(
            f"Locust exited with {code} and left no readable results ({exc}):\n"
            f"{_tail(locust_log)}"
        ) from exc
    # 1 is Locust's "some requests failed or the scenarios raised"; a crash
    # exits 1 too (found by a trial: a MemoryError was reported as missing
    # files), so the results must say which.
    if code == 1 and not (results.failures or results.exceptions):
        raise RunError(
            f"Locust exited with 1 but recorded no failure:\n{_tail(locust_log)}"
        )
    return results


def server_environment(
    options: argparse.Namespace, data_dir: Path, cleanup: ExitStack
) -> dict[str, str]:
    env = dict(os.environ)
    if options.mode == "embedded":
        for name in ENGINE_SETTINGS:
            env.pop(name, None)
    else:
        tag = run_tag()
        if not env.get("PETPAL_DATABASE_URL"):
            admin = env.get("PETPAL_TEST_DATABASE_URL", DEFAULT_ADMIN_DATABASE_URL)
            url = cleanup.enter_context(private_database(admin, tag))
            env["PETPAL_DATABASE_URL"] = url
        if not env.get("PETPAL_REDIS_URL"):
            redis_url = env.get("PETPAL_TEST_REDIS_URL", DEFAULT_REDIS_URL)
            prefix = cleanup.enter_context(private_key_prefix(redis_url, tag))
            env["PETPAL_REDIS_URL"] = redis_url
            env["PETPAL_CACHE_KEY_PREFIX"] = prefix
        env.setdefault("PETPAL_SECRET_KEY", secrets.token_urlsafe(48))
    env["PETPAL_DATA_DIR"] = str(data_dir)
    # One address is every simulated person here: the per-IP limits would
    # refuse them within seconds. The load test measures the rest.
    env["PETPAL_RATE_LIMITS_ENABLED"] = "false"
    env.setdefault("PETPAL_LOG_LEVEL", "WARNING")
    return env


def _petpal(
    env: dict[str, str], *args: str, timeout: float = SETUP_TIMEOUT_SECONDS
) -> None:
    print("+ petpal", " ".join(args), flush=True)
    subprocess.run(
        [str(BIN / "petpal"), *args],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=timeout,
    )


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """User and system CPU the server has used so far (Linux; else NaN)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().split()
        except OSError:
            return math.nan
        # utime and stime, fields 14 and 15 (the name before has no spaces).
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """Cores used on average while Locust ran: by the server, by Locust, by all.

    On a shared machine the difference is other people's work, which the
    latencies include as time spent waiting for a core.
    """

    server: float = math.nan
    locust: float = math.nan
    machine: float = math.nan
    cores: int = os.cpu_count() or 1

    @property
    def others(self) -> float:
        return self.machine - self.server - self.locust


@contextmanager
def measuring_cpu(server: Server) -> Iterator[CpuUse]:
    use = CpuUse()
    began, machine, own = time.monotonic(), _machine_cpu_seconds(), server.cpu_seconds()
    children = _children_cpu_seconds()
    yield use
    elapsed = time.monotonic() - began
    use.server = (server.cpu_seconds() - own) / elapsed
    # Locust is the only child reaped meanwhile: the server still runs.
    use.locust = (_children_cpu_seconds() - children) / elapsed
    use.machine = (_machine_cpu_seconds() - machine) / elapsed


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_cpu_seconds() -> float:
    """CPU time every core spent busy, steal included (Linux; else NaN)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return math.nan
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(env: dict[str, str], log_path: Path) -> Iterator[Server]:
    """``petpal serve`` on a free loopback port, ready; stopped by pid on exit."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "petpal"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Server(process, f"http://127.0.0.1:{port}")
        _wait_until_ready(server, log_path)
        print(f"server pid {process.pid} ready at {server.url}", flush=True)
        yield server
    finally:
        _stop(process, "server")


def _free_port() -> int:
    # The port is free now; another process could take it before the server
    # binds, in which case the server exits and the run says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(server: Server, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RunError(f"the server exited at start:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise RunError(f"the server was not ready in {READY_TIMEOUT_SECONDS} s")


def _stop(process: subprocess.Popen[bytes], what: str) -> None:
    """SIGTERM to ``process`` (a graceful stop), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        print(f"the {what} (pid {process.pid}) ignored SIGTERM; killing it")
        process.kill()
        process.wait()


def run_locust(
    options: argparse.Namespace,
    dataset: Dataset,
    url: str,
    prefix: Path,
    final: Path,
    log_path: Path,
) -> int:
    """Run Locust to its end; its exit status, 0 or 1 (else RunError)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    env[ACCOUNTS_ENV] = dataset.accounts
    env[ACCOUNT_COUNT_ENV] = str(dataset.account_count)
    env[PASSWORD_ENV] = dataset.password
    env[SEED_ENV] = options.seed
    env[FINAL_RESULTS_ENV] = str(final.resolve())
    if options.mix:
        env[MIX_ENV] = str(options.mix.resolve())
    if options.weights is not None:
        env[WEIGHTS_ENV] = options.weights
    command = [
        str(BIN / "locust"),
        *("--locustfile", str(LOCUSTFILE), "--headless", "--only-summary"),
        *("--host", url, "--csv", str(prefix)),
        # One more for the baseline client (locustfile.Baseline).
        *("--users", str(options.users + 1)),
        *("--spawn-rate", f"{options.spawn_rate:g}"),
        *("--run-time", f"{options.duration}s"),
        *("--stop-timeout", str(LOCUST_STOP_TIMEOUT_SECONDS)),
    ]
    # Past the run time, the stop timeout and some slack, Locust is stuck.
    limit = options.duration + LOCUST_STOP_TIMEOUT_SECONDS + 60
    print(
        f"locust: {options.users} people, {options.spawn_rate:g} started per "
        f"second, {options.duration} s",
        flush=True,
    )
    # A kept folder's logs are this run's alone (found by a trial: appended).
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired as exc:
        raise RunError(f"Locust did not finish within {limit} s") from exc
    finally:
        _stop(process, "Locust")
    # 1 means "some requests failed", which the verdict reports in detail.
    if code not in (0, 1):
        raise RunError(f"Locust exited with {code}:\n{_tail(log_path)}")
    return code


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _summary(options: argparse.Namespace, results: Results, cpu: CpuUse) -> str:
    actions = [s for s in results.requests if s.is_action]
    count = sum(s.count for s in actions)
    lines = [
        f"{count} requests from {options.users} people in {options.duration} s, "
        f"{sum(s.per_second for s in actions):.1f} per second "
        f"({options.mode}, data set {options.dataset})",
        f"CPU in use meanwhile, in cores of {cpu.cores}: the server {cpu.server:.2f},"
        f" Locust {cpu.locust:.2f}, everything else {cpu.others:.2f}",
    ]
    baseline = next((s for s in results.requests if s.name == BASELINE_NAME), None)
    if baseline is not None:
        lines.append(
            f"baseline, the server answering a constant: median "
            f"{baseline.median_ms:.0f} ms, p99 {baseline.p99_ms:.0f} ms"
        )
    if cpu.others > BUSY_MACHINE * cpu.cores:
        lines.append(
            "NOTE: other work kept this machine busy during the run; the "
            "latencies include the time requests waited for a core"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
