"""Profile an ingestion hot path: run the Track v1 mix (B1) or B2's batches against ``tidings serve``
while py-spy samples the server, then summarise where the time goes (per thread, self time, and
inclusive time of Tidings' own functions).

py-spy is not a project dependency; install it anywhere (``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip
install py-spy``) and pass ``--py-spy /tmp/pyspy/bin/py-spy``. Usage::

    python -m bench.profile --py-spy /tmp/pyspy/bin/py-spy [--backend sqlite] [--seconds 15] [--gil]
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.b1 import track_v1_mix
from bench.b2 import SURFACES, batch_workload
from bench.load import pick_generator, run_load
from bench.server import serving

ROOT = Path(__file__).resolve().parents[1]
# Shorten frame locations (site-packages, the source tree, the standard library) and drop line numbers, so
# time is summed per function.
_LOCATION = re.compile(
    r" \((?:[^()]*?/site-packages/|[^()]*?/src/|[^()]*?/lib/python3\.\d+/)?([^():]*)(?::\d+)?\)$"
)
# Leaf frames of threads that are parked, not working (py-spy's own idle detection misses some).
IDLE_LEAVES = ("Condition.wait (", "Event.wait (", "Thread._wait_for_tstate_lock (", "select (", "sleep (")


@dataclass(frozen=True)
class Profile:
    # Samples the whole recording could hold per thread (rate x seconds), and those showing work.
    possible: int
    busy: int
    idle: int
    by_thread: list[tuple[str, int]]
    self_time: list[tuple[str, int]]
    inclusive_tidings: list[tuple[str, int]]


def _function(frame: str) -> str:
    return _LOCATION.sub(r" (\1)", frame)


def summarise(collapsed: str, *, possible: int, top: int = 25) -> Profile:
    """Read py-spy's raw output (one ``thread;frame;frame;… count`` line per distinct stack)."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        busy += count
        threads[re.sub(r"\(\d+\)", "", thread).removeprefix("thread").strip(" :")] += count
        functions = [_function(frame) for frame in frames]
        self_time[functions[-1]] += count
        for function in set(functions):
            if " (tidings/" in function:
                inclusive[function] += count
    return Profile(
        possible, busy, idle, threads.most_common(), self_time.most_common(top), inclusive.most_common(top)
    )


def render(profile: Profile) -> str:
    def share(count: int) -> str:
        return f"{count / profile.busy:6.1%}" if profile.busy else "   n/a"

    lines = [
        f"{profile.busy} busy samples ({profile.idle} parked-thread samples left out).",
        "",
        "By thread (share of busy samples; busy share of the recording's wall time):",
    ]
    lines += [
        f"  {share(n)}  {name or '(unnamed)'}  ({n / profile.possible:.0%} of wall time)"
        for name, n in profile.by_thread
    ]
    lines += ["", "Self time, by function:"]
    lines += [f"  {share(n)}  {frame}" for frame, n in profile.self_time]
    lines += ["", "Inclusive time, Tidings functions:"]
    lines += [f"  {share(n)}  {frame}" for frame, n in profile.inclusive_tidings]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--py-spy", required=True, help="path to a py-spy executable")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--workload",
        choices=["b1", *SURFACES],
        default="b1",
        help="b1: the Track v1 mix; track_v2 or pipelines: B2's 100-event batches on that surface",
    )
    args = parser.parse_args(argv)
    generator = pick_generator(args.generator)
    raw = args.workdir.resolve() / f"profile-{args.workload}-{args.backend}-{secrets.token_hex(3)}.txt"
    with serving(args.backend, args.workdir) as server:
        workspace = server.new_workspace()
        workload = (
            track_v1_mix(workspace) if args.workload == "b1" else batch_workload(args.workload, workspace)
        )
        # Let the server settle (auth cache, statement caches) before sampling.
        warm = run_load(
            generator,
            server.base_url,
            workload,
            connections=args.connections,
            seconds=2,
            max_requests=1_000_000,
            prefix=secrets.token_hex(3),
        )
        command = [
            args.py_spy,
            "record",
            "--pid",
            str(server.process.pid),
            "--duration",
            str(round(args.seconds)),
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--threads",
            "--output",
            str(raw),
        ]
        if args.gil:
            command.append("--gil")
        sampler = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        load = run_load(
            generator,
            server.base_url,
            workload,
            connections=args.connections,
            seconds=args.seconds + 1,
            max_requests=10_000_000,
            prefix=secrets.token_hex(3),
        )
        output, _ = sampler.communicate(timeout=args.seconds + 60)
    if sampler.returncode != 0 or not raw.exists():
        print(output.decode(errors="replace"), file=sys.stderr)
        return 1
    sampled = "GIL holder only" if args.gil else "all active threads"
    print(
        f"{args.workload} on {args.backend} under py-spy ({sampled}, "
        f"{args.rate} Hz): {load.ok_per_second:,.0f} req/s with {generator} "
        f"(warm-up {warm.ok_per_second:,.0f} req/s); raw stacks in {raw}\n"
    )
    print(render(summarise(raw.read_text(), possible=round(args.rate * args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
