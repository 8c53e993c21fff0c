"""`make bench`: direct-to-simulator vs through-router, in one run, as a table.

The simulator and router each run as their own process, pinned to a core where the
machine has two. Through router, the load generator shares the simulator's core and the
router has one to itself, as in a sidecar; direct, the load generator takes the idle
router core. Each scenario runs against the simulator directly and through router, back
to back, and prints both and the difference.

    python -m tests.bench.run [--seconds 5] [--repeat 1] [--results bench-results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop

from tests.bench import loadgen

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o"


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    stream: bool


SCENARIOS = [
    Scenario("c=1", 1, False),
    Scenario("c=64", 64, False),
    Scenario("stream c=1", 1, True),
    Scenario("stream c=32", 32, True),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians are reported")
    parser.add_argument("--results", default="bench-results.jsonl", help="JSON lines appended here")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2
    router_core, other_core = (cores[1], cores[0]) if pinned else (None, None)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sim_port, router_port = free_port(), free_port()
        processes.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "router",
                    "sim",
                    "--dialect",
                    "trinity",
                    "--port",
                    str(sim_port),
                    "--chunks",
                    "8",
                    "--chunk-gap",
                    "2ms",
                ],
                other_core,
            )
        )
        wait_for(f"http://127.0.0.1:{sim_port}/_sim/stats")
        config = write_config(sim_port)
        processes.append(
            start(
                [sys.executable, "-m", "router", "serve", "--config", config, "--port", str(router_port)],
                router_core,
            )
        )
        wait_for(f"http://127.0.0.1:{router_port}/healthz")
        rows = []
        for scenario in SCENARIOS:
            # Direct: the load generator takes the (idle) router core, so it never shares a core
            # with the simulator. Through router: it shares the simulator's core, leaving the
            # router a core of its own. Either way every hop crosses cores, as between pods.
            if pinned:
                os.sched_setaffinity(0, {router_core})
            direct = measure(sim_port, "/chat/completions", scenario, args)
            if pinned:
                os.sched_setaffinity(0, {other_core})
            routed = measure(router_port, "/v1/chat/completions", scenario, args)
            rows.append((scenario, direct, routed))
            record(args.results, scenario, direct, routed, pinned)
        print_table(rows, pinned=pinned, seconds=args.seconds, repeat=args.repeat)
    finally:
        for process in processes:  # only what this run started, by PID
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(10)
    return 0


def measure(port: int, path: str, scenario: Scenario, args: argparse.Namespace) -> dict[str, float]:
    body = json.dumps(
        {
            "model": MODEL,
            "stream": scenario.stream,
            "messages": [{"role": "user", "content": "Benchmark me."}],
        }
    ).encode()
    runs = []
    for _ in range(args.repeat):
        result = uvloop.run(
            loadgen.run(
                "127.0.0.1",
                port,
                path,
                body,
                concurrency=scenario.concurrency,
                seconds=args.seconds,
                headers=b"Authorization: Bearer bench\r\n",
            )
        )
        runs.append(
            {
                "p50": result.p(0.5),
                "p99": result.p(0.99),
                "rps": result.rps,
                "ttft_p50": result.p(0.5, ttft=True),
                "ttft_p99": result.p(0.99, ttft=True),
                "errors": result.errors,
                "n": len(result.latencies),
            }
        )
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def print_table(
    rows: list[tuple[Scenario, dict[str, float], dict[str, float]]],
    *,
    pinned: bool,
    seconds: float,
    repeat: int,
) -> None:
    print(
        f"\nrouter vs direct to the simulator ({'router on its own core' if pinned else 'not pinned'}; "
        f"{seconds:g}s per run, median of {repeat})\n"
    )
    head = (
        f"{'scenario':<13} {'target':<7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'ttft p50':>9} "
        f"{'ttft p99':>9} {'errors':>7}"
    )
    print(head)
    print("-" * len(head))
    for scenario, direct, routed in rows:
        for name, r in (("direct", direct), ("router", routed)):
            ttft = f"{r['ttft_p50']:9.3f} {r['ttft_p99']:9.3f}" if scenario.stream else f"{'':>9} {'':>9}"
            print(
                f"{scenario.name if name == 'direct' else '':<13} {name:<7} {r['p50']:8.3f} {r['p99']:8.3f} "
                f"{r['rps']:9.0f} {ttft} {r['errors']:7.0f}"
            )
        diff = {key: routed[key] - direct[key] for key in ("p50", "p99", "ttft_p50", "ttft_p99")}
        ratio = routed["rps"] / direct["rps"]
        added = f"{'':<13} {'added':<7} {diff['p50']:+8.3f} {diff['p99']:+8.3f} {ratio:8.2f}x"
        if scenario.stream:
            added += f" {diff['ttft_p50']:+9.3f} {diff['ttft_p99']:+9.3f}"
        print(added)
    print()


def record(
    path: str, scenario: Scenario, direct: dict[str, float], routed: dict[str, float], pinned: bool
) -> None:
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "scenario": scenario.name,
        "profile": "bare",
        "pinned": pinned,
        "direct": direct,
        "router": routed,
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")


def write_config(sim_port: int) -> str:
    text = f"""
providers:
  trinity:
    base_url: http://127.0.0.1:{sim_port}
    keys: [bench-key]
    models: {{{MODEL}: {{}}}}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    return handle.name


def start(command: list[str], core: int | None) -> subprocess.Popen[bytes]:
    # Its JSON log lines are part of the cost being measured, but not of the report.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if core is not None:
        os.sched_setaffinity(process.pid, {core})
    return process


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
