"""Load generators over loopback: ``wrk`` with a Lua script (preferred: it leaves the CPU to the server) and
a small asyncio HTTP/1.1 client in this process (the fallback, and what the smoke test uses).

Both run the same :class:`Workload`: each connection cycles through request templates in which ``{id}``
is replaced by a key unique to the cycle and ``{t}`` by a key unique to the connection (Python) or wrk
thread. Every run is bounded in time, and the Python generator also in request count.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

WRK_SCRIPT = Path(__file__).with_name("lua") / "workload.lua"
WRK_THREADS = 2
GENERATORS = ("wrk", "python")


@dataclass(frozen=True)
class RequestTemplate:
    method: str
    path: str
    body: str = ""


@dataclass(frozen=True)
class Workload:
    name: str
    templates: tuple[RequestTemplate, ...]
    headers: tuple[tuple[str, str], ...] = ()


JSON_CONTENT = ("Content-Type", "application/json")


def basic_auth(user: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


@dataclass(frozen=True)
class LoadResult:
    generator: str
    connections: int
    seconds: float
    # Requests started, answered (any status), answered 200, and answered otherwise or lost to a socket error.
    sent: int
    answered: int
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    # 200s per request template (Python generator only; wrk cannot tell responses apart).
    ok_by_template: tuple[int, ...] | None = None

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def in_flight_at_stop(self) -> int:
        """Requests sent but never answered: the server may or may not have committed them."""
        return max(0, self.sent - self.answered)


def machine_load() -> str:
    """The 1, 5 and 15-minute load averages: how busy the machine was with other work too."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    if not wrk_available():
        return "not installed"
    probe = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (probe.stdout or probe.stderr).splitlines()
    return first[0].split(" [", 1)[0].strip() if first else "unknown"


def pick_generator(requested: str) -> str:
    if requested == "auto":
        return "wrk" if wrk_available() else "python"
    if requested == "wrk" and not wrk_available():
        raise RuntimeError("wrk is not installed (apt-get install -y wrk), use --generator python")
    return requested


def run_load(
    generator: str,
    base_url: str,
    workload: Workload,
    *,
    connections: int,
    seconds: float,
    max_requests: int,
    prefix: str,
) -> LoadResult:
    if generator == "wrk":
        return run_wrk(base_url, workload, connections=connections, seconds=seconds, prefix=prefix)
    return run_python(
        base_url, workload, connections=connections, seconds=seconds, max_requests=max_requests, prefix=prefix
    )


# -- wrk ----------------------------------------------------------------------------------------------


def run_wrk(
    base_url: str, workload: Workload, *, connections: int, seconds: float, prefix: str
) -> LoadResult:
    duration = max(1, round(seconds))
    arguments = [
        prefix,
        str(len(workload.headers)),
        *(f"{name}: {value}" for name, value in workload.headers),
    ]
    for template in workload.templates:
        arguments += [template.method, template.path, template.body]
    command = [
        "wrk",
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        base_url,
        "--",
        *arguments,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in finished.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if finished.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}")
    report = json.loads(line.removeprefix("WRK_RESULT "))
    return LoadResult(
        generator="wrk",
        connections=connections,
        seconds=report["duration_us"] / 1e6,
        sent=report["sent"],
        answered=report["answered"],
        ok=report["ok"],
        failed=report["failed"] + report["socket_errors"],
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
    )


# -- the Python generator -----------------------------------------------------------------------------


class _Budget:
    def __init__(self, max_requests: int, deadline: float) -> None:
        self.remaining = max_requests
        self.deadline = deadline

    def take(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


@dataclass
class _Tally:
    sent: int = 0
    answered: int = 0
    failed: int = 0


def run_python(
    base_url: str,
    workload: Workload,
    *,
    connections: int,
    seconds: float,
    max_requests: int,
    prefix: str,
) -> LoadResult:
    """Drive the workload from this process; stops at ``max_requests`` or after ``seconds``, then waits for
    every request in flight, so the tallies are exact."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(base_url, workload, connections, seconds, max_requests, prefix))


async def _drive(
    base_url: str, workload: Workload, connections: int, seconds: float, max_requests: int, prefix: str
) -> LoadResult:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    ok_by_template = [0] * len(workload.templates)
    tally = _Tally()
    started = time.perf_counter()
    budget = _Budget(max_requests, started + seconds)
    workers = [
        _connection(host, port, workload, f"{prefix}-{index}", budget, latencies, ok_by_template, tally)
        for index in range(connections)
    ]
    await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        generator="python",
        connections=connections,
        seconds=elapsed,
        sent=tally.sent,
        answered=tally.answered,
        ok=sum(ok_by_template),
        failed=tally.failed,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
        ok_by_template=tuple(ok_by_template),
    )


def _percentile(ordered: Sequence[float], percent: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def _render(template: RequestTemplate, host: str, headers: str, key: str, cycle_key: str) -> bytes:
    path = template.path.replace("{id}", cycle_key).replace("{t}", key)
    body = template.body.replace("{id}", cycle_key).replace("{t}", key).encode()
    head = f"{template.method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
    if body or template.method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _connection(
    host: str,
    port: int,
    workload: Workload,
    key: str,
    budget: _Budget,
    latencies: list[float],
    ok_by_template: list[int],
    tally: _Tally,
) -> None:
    headers = "".join(f"{name}: {value}\r\n" for name, value in workload.headers)
    reader, writer = await asyncio.open_connection(host, port)
    cycle = 0
    try:
        while True:
            cycle += 1
            for position, template in enumerate(workload.templates):
                if not budget.take():
                    return
                request = _render(template, host, headers, key, f"{key}-{cycle}")
                tally.sent += 1
                began = time.perf_counter()
                try:
                    writer.write(request)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    tally.failed += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - began)
                tally.answered += 1
                if status == 200:
                    ok_by_template[position] += 1
                else:
                    tally.failed += 1
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body); return its status."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status
