"""The two ways the benchmark report loads a server, and what it reads meanwhile.

- ``capacity``: closed loop at saturation, by wrk (C, one thread, a fixed
  number of connections each sending its next request when the previous
  answer arrives). What it measures is throughput; its latencies are not
  reported, since at saturation they only measure the queue.
- ``open_loop``: requests at a fixed arrival rate by ``benchmarks/openloop.py``;
  latency counted from each request's due time.

Both cycle through a list of requests (method, path, headers, JSON body),
so that a run reads many accounts' feeds, not one, and both count the CPU
the server's processes used meanwhile, which gives the CPU per request.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

OPEN_LOOP = Path(__file__).resolve().parent / "openloop.py"
WRK_CONNECTIONS = 32
MAX_WARMUP_SECONDS = 60.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str | None = None
    body: dict[str, Any] | None = None

    def as_plan(self) -> dict[str, Any]:
        headers = (
            {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        )
        return {
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
        }


@dataclass
class Capacity:
    requests: int
    seconds: float
    errors: int
    server_cpu_seconds: float
    machine_cpu_seconds: float
    raw: str
    # Cores each role used during the run (``capacity(roles=…)``): the
    # server, the relay, the job worker, PostgreSQL, Redis, RabbitMQ, wrk.
    cores_by_role: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_seconds / self.requests if self.requests else 0.0

    @property
    def system_cpu_ms_per_request(self) -> float | None:
        """CPU of the whole machine per request, but the load generator's:
        the server with the relay, the job worker and the data stores it
        made work. None without ``roles``, which measure wrk's share."""
        wrk = self.cores_by_role.get(_NAMED_ROLES["wrk"])
        if wrk is None or not self.requests:
            return None
        spent = self.machine_cpu_seconds - wrk * self.seconds
        return 1000 * spent / self.requests

    @property
    def server_cores(self) -> float:
        return self.server_cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def machine_cores(self) -> float:
        return self.machine_cpu_seconds / self.seconds if self.seconds else 0.0


@dataclass
class OpenLoop:
    rate: float
    result: dict[str, Any] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0

    @property
    def p99_ms(self) -> float:
        return float(self.result.get("latency_ms", {}).get("p99", float("nan")))

    @property
    def errors(self) -> int:
        return int(self.result.get("errors", 0))


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal: UTF-8 bytes, all but plain ASCII escaped."""
    plain = set(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
    escaped = "".join(
        chr(byte) if byte in plain else f"\\{byte:03d}" for byte in text.encode()
    )
    return f'"{escaped}"'


def wrk_script(requests: list[Request]) -> str:
    """A wrk script cycling through ``requests``, each thread from its own offset."""
    # Made in init(), once wrk has set the Host header from the URL: made as
    # the script loads, they had none, and HTTP/1.1 requires it (the server
    # answers 400 since it does; RFC 9112 section 3.2).
    lines = ["local requests = {}", "local function build()"]
    for r in requests:
        headers = ["Accept = 'application/json'"]
        if r.token:
            headers.append(f"Authorization = {_lua_string('Bearer ' + r.token)}")
        body = "nil"
        if r.body is not None:
            headers.append('["Content-Type"] = "application/json"')
            body = _lua_string(json.dumps(r.body))
        lines.append(
            f"  requests[#requests + 1] = wrk.format({_lua_string(r.method)}, "
            f"{_lua_string(r.path)}, {{{', '.join(headers)}}}, {body})"
        )
    lines += [
        "end",
        "local counter = 0",
        "local threads = 0",
        "function setup(thread)",
        "  thread:set('start', threads * 7919)",
        "  threads = threads + 1",
        "end",
        "function init(args)",
        "  build()",
        "  counter = start or 0",
        "end",
        "function request()",
        "  counter = counter + 1",
        "  return requests[(counter % #requests) + 1]",
        "end",
    ]
    return "\n".join(lines) + "\n"


_WRK_SUMMARY = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m),")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def capacity(
    url: str,
    requests: list[Request],
    seconds: float,
    server_pids: list[int],
    warmup_seconds: float = 3.0,
    connections: int = WRK_CONNECTIONS,
    roles: dict[str, list[int]] | None = None,
) -> Capacity:
    """Requests per second at saturation: wrk, closed loop, after a warm-up."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(requests))
    try:
        if warmup_seconds > 0:
            # Long enough to send every request of the cycle at least once, so
            # that the measured run starts warm.
            warm = _WRK_SUMMARY.search(
                _wrk(url, script.name, warmup_seconds, connections)
            )
            sent = int(warm.group(1)) if warm else 0
            if sent < len(requests):
                rate = max(sent / warmup_seconds, 1.0)
                more = min(MAX_WARMUP_SECONDS, 1.2 * (len(requests) - sent) / rate)
                _wrk(url, script.name, more, connections)
        roles_before = cpu_by_process(roles or {})
        cpu_before, machine_before = _tree_cpu(server_pids), machine_cpu_seconds()
        children_before = _children_cpu()
        raw = _wrk(url, script.name, seconds, connections)
        wrk_cpu = _children_cpu() - children_before  # wrk has exited by now
        cpu = _tree_cpu(server_pids) - cpu_before
        machine = machine_cpu_seconds() - machine_before
        roles_after = cpu_by_process(roles or {})
    finally:
        os.unlink(script.name)
    summary = _WRK_SUMMARY.search(raw)
    if summary is None:
        raise RuntimeError(f"wrk printed no summary:\n{raw}")
    errors = sum(int(n) for n in _WRK_NON_2XX.findall(raw))
    socket_errors = _WRK_SOCKET.search(raw)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    elapsed = float(summary.group(2)) * _UNIT[summary.group(3)]
    by_role: dict[str, float] = {}
    if roles is not None:
        by_role = cores_between(roles_before, roles_after, roles, elapsed)
        by_role[_NAMED_ROLES["wrk"]] = wrk_cpu / elapsed
        by_role["everything else"] = machine / elapsed - sum(by_role.values())
    return Capacity(
        requests=int(summary.group(1)),
        seconds=elapsed,
        errors=errors,
        server_cpu_seconds=cpu,
        machine_cpu_seconds=machine,
        raw=raw,
        cores_by_role=by_role,
    )


def _wrk(url: str, script: str, seconds: float, connections: int) -> str:
    command = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--script",
        script,
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    if done.stderr.strip():
        # A script wrk cannot load is reported here, and wrk then sends its
        # default request instead: never a measurement.
        raise RuntimeError(f"wrk: {done.stderr.strip()}")
    return done.stdout


def check_answers(url: str, requests: list[Request], sample: int = 60) -> None:
    """Send the first ``sample`` requests once each: all must answer 2xx."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for r in requests[:sample]:
            answer = client.request(
                r.method, r.path, headers=r.as_plan()["headers"], json=r.body
            )
            if not answer.is_success:
                raise RuntimeError(
                    f"{r.method} {r.path}: {answer.status_code} {answer.text[:200]}"
                )


def open_loop(
    url: str,
    requests: list[Request],
    rate: float,
    seconds: float,
    server_pids: list[int],
    connections: int = 256,
) -> OpenLoop:
    """Latency at a fixed arrival rate, by benchmarks/openloop.py in its own process."""
    plan = {
        "url": url,
        "rate": rate,
        "duration": seconds,
        "connections": connections,
        "requests": [r.as_plan() for r in requests],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(plan, file)
    try:
        cpu_before = _tree_cpu(server_pids)
        done = subprocess.run(
            [sys.executable, str(OPEN_LOOP), file.name],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        )
        cpu = _tree_cpu(server_pids) - cpu_before
    finally:
        os.unlink(file.name)
    return OpenLoop(rate=rate, result=json.loads(done.stdout), server_cpu_seconds=cpu)


# --- CPU accounting (Linux /proc) ------------------------------------------------


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found += [int(p) for p in text.split()]
    return found


def process_tree(pids: list[int]) -> list[int]:
    seen: list[int] = []
    pending = list(pids)
    while pending:
        pid = pending.pop()
        if pid not in seen:
            seen.append(pid)
            pending += _children(pid)
    return seen


def _tree_cpu(pids: list[int]) -> float:
    return sum(_process_cpu(pid) for pid in process_tree(pids))


# The machine's other processes that a run loads, by process name.
_NAMED_ROLES = {
    "postgres": "PostgreSQL",
    "redis-server": "Redis",
    "beam.smp": "RabbitMQ",
    "wrk": "wrk (the load generator)",
}


def cpu_by_process(roles: dict[str, list[int]]) -> dict[int, tuple[str, float]]:
    """Each process of a role, with the CPU seconds it has used so far: the
    process trees given, and the machine's PostgreSQL, Redis, RabbitMQ and
    wrk processes by name."""
    found: dict[int, tuple[str, float]] = {}
    for role, pids in roles.items():
        for pid in process_tree(pids):
            found[pid] = (role, _process_cpu(pid))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in found:
            continue
        try:
            name = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        role = _NAMED_ROLES.get(name)
        if role is not None:
            found[int(entry)] = (role, _process_cpu(int(entry)))
    return found


def cores_between(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    roles: dict[str, list[int]],
    seconds: float,
) -> dict[str, float]:
    """Cores each role used between two snapshots, process by process: a
    process that started meanwhile counts whole, one that exited is lost (a
    PostgreSQL backend of a closed connection), never subtracted."""
    used = dict.fromkeys([*roles, *_NAMED_ROLES.values()], 0.0)
    for pid, (role, cpu) in after.items():
        earlier = before.get(pid)
        used[role] += cpu - (earlier[1] if earlier and earlier[0] == role else 0.0)
    return {role: cpu / seconds for role, cpu in used.items()}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu_seconds() -> float:
    """CPU time every core spent busy since boot."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def settle(seconds: float = 1.0) -> None:
    """A pause between runs, so one run's tail is not the next one's start."""
    time.sleep(seconds)
