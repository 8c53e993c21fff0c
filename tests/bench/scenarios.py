"""The scenarios, and one measured run of a scenario against one target.

A run drives the load generator (in this process, on uvloop) and meanwhile samples the
router's resident memory from /proc every 50 ms; around it, it reads the CPU time of each
process involved and, with a Redis, the INFO commandstats delta.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import orjson
import uvloop

from tests.bench import loadgen
from tests.bench.servers import Child, cpu_seconds, descendants, rss_bytes


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    concurrency: int
    stream: bool
    sim: str
    """Which simulator answers: see servers.SIMS."""
    ramp: float = 0.0
    warmup: float = 1.0
    grace: float = 30.0
    gap_ms: float | None = None
    """The simulator's nominal inter-chunk gap, for streams."""
    api: str = "chat"
    """The API the load asks in. Other than chat, the scenario is a pair (pairs.py): that API and
    its chat twin, through each router, with no direct run."""


SCENARIOS = [
    Scenario("c=1", "c=1", 1, False, "fast"),
    Scenario("c=64", "c=64", 64, False, "fast"),
    Scenario("inflight=500", "500 in flight", 500, False, "slow", ramp=0.2),
    # One stream at a time: time to first token with nothing queued in front of it (at c=32 the
    # router's core is busy and TTFT includes waiting for it).
    Scenario("stream=1", "stream c=1", 1, True, "fast", gap_ms=2.0),
    Scenario("stream=32", "stream c=32", 32, True, "fast", gap_ms=2.0),
    # 200 chunks 20 ms apart: a 4 s stream. Start the connections over one stream's length so they do
    # not march in step, and measure only once every connection is streaming.
    Scenario("stream=1000", "stream c=1000", 1000, True, "long", ramp=4.0, warmup=5.0, grace=40, gap_ms=20.0),
    # The translated APIs, each against its chat twin (pairs.py). `--only api` picks the five.
    Scenario("messages:stream=1", "stream c=1 (messages)", 1, True, "fast", gap_ms=2.0, api="messages"),
    Scenario("responses:stream=1", "stream c=1 (responses)", 1, True, "fast", gap_ms=2.0, api="responses"),
    Scenario("messages:stream=32", "stream c=32 (messages)", 32, True, "fast", gap_ms=2.0, api="messages"),
    Scenario("responses:stream=32", "stream c=32 (responses)", 32, True, "fast", gap_ms=2.0, api="responses"),
    Scenario("embeddings:c=32", "embeddings c=32", 32, False, "rag", api="embeddings"),
]
APIS = ("messages", "responses", "embeddings")
"""`--only` names for every scenario of one translated API; `api` names all of them."""


def select(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    wanted = [_norm(item) for item in only.split(",") if item.strip()]
    chosen = [s for s in SCENARIOS if any(w in _names(s) for w in wanted)]
    unknown = [w for w in wanted if all(w not in _names(s) for s in SCENARIOS)]
    if unknown:
        names = ", ".join([*(s.key for s in SCENARIOS), "api", *APIS])
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {names}")
    return chosen


def _names(scenario: Scenario) -> tuple[str, ...]:
    """What `--only` may call a scenario: its key, its name, and its API's group."""
    own = (_norm(scenario.key), _norm(scenario.name))
    return own if scenario.api == "chat" else (*own, "api", scenario.api)


def _norm(text: str) -> str:
    return text.replace(" ", "").replace("-", "").replace("_", "").lower()


@dataclass
class Target:
    """Where the load goes: the simulator itself, or a router profile in front of it."""

    name: str
    port: int
    path: str
    model: str
    headers: bytes = b""
    router: Child | None = None
    cores: set[int] | None = None
    """Where the load generator runs (None: wherever it is)."""
    redis: bool = False
    """Count Redis commands during the run."""
    profile: str | None = None
    """The router profile the load goes through (None: direct to the simulator)."""
    api: str = "chat"
    """The API asked (loadgen.FORMATS says how its stream reads)."""
    body: bytes | None = None
    """The request body, where it is not the scenario's chat body (body())."""


@dataclass
class Watch:
    """The other processes whose CPU time a run reports, and the Redis to count commands on."""

    sim: Child | None = None
    redis_pid: int | None = None
    redis_client: Any = None


def body(scenario: Scenario, model: str) -> bytes:
    return orjson.dumps(
        {
            "model": model,
            "stream": scenario.stream,
            "messages": [{"role": "user", "content": "Benchmark me."}],
        }
    )


def measure(scenario: Scenario, target: Target, watch: Watch, seconds: float) -> dict[str, Any]:
    """One run: the load generator's figures plus peak RSS, CPU per process and Redis commands."""
    if target.cores is not None:
        os.sched_setaffinity(0, target.cores)
    router_pids = target.router.pids() if target.router else []
    groups = {
        "loadgen": None,
        "router": router_pids,
        "sim": [watch.sim.pid] if watch.sim else [],
        "redis": [watch.redis_pid] if watch.redis_pid else [],
    }
    cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items() if pids}
    redis_before = commandstats(watch.redis_client)
    peak = [0]
    start_rss = rss_bytes(router_pids)

    async def sample() -> None:
        pids, refreshed = router_pids, time.monotonic()
        while True:
            peak[0] = max(peak[0], rss_bytes(pids))
            await asyncio.sleep(0.05)
            if target.router and time.monotonic() - refreshed > 1:
                pids, refreshed = [target.router.pid, *descendants(target.router.pid)], time.monotonic()

    async def go() -> loadgen.Result:
        sampler = asyncio.get_running_loop().create_task(sample()) if router_pids else None
        try:
            return await loadgen.run(
                "127.0.0.1",
                target.port,
                target.path,
                body(scenario, target.model) if target.body is None else target.body,
                concurrency=scenario.concurrency,
                seconds=seconds,
                warmup=scenario.warmup,
                ramp=scenario.ramp,
                grace=scenario.grace,
                stream=scenario.stream,
                headers=target.headers,
                form=loadgen.FORMATS.get(target.api, loadgen.CHAT),
            )
        finally:
            if sampler is not None:
                sampler.cancel()

    result = uvloop.run(go())
    cpu = {"loadgen": result.cpu}
    for name, pids in groups.items():
        if pids:
            cpu[name] = cpu_seconds(pids) - cpu_before[name]
    gaps = result.gaps()
    row: dict[str, Any] = {
        "p50": result.p(0.5),
        "p99": result.p(0.99),
        "rps": result.rps,
        "ttft_p50": result.p(0.5, ttft=True),
        "ttft_p99": result.p(0.99, ttft=True),
        "gap_p50": loadgen.percentile(gaps, 0.5) * 1000,
        "gap_p99": loadgen.percentile(gaps, 0.99) * 1000,
        "errors": result.errors,
        "error_kinds": result.kinds,
        "timeouts": result.timeouts,
        "n": len(result.latencies),
        "total": result.total,
        "wall_s": result.wall,
        "rss_mb": peak[0] / 2**20 if router_pids else None,
        "rss_start_mb": start_rss / 2**20 if router_pids else None,
        "router_cpu_ms_per_req": 1000 * cpu["router"] / result.total
        if "router" in cpu and result.total
        else None,
        "cpu_pct": {name: 100 * used / result.wall for name, used in cpu.items()},
    }
    if watch.redis_client is not None:
        after = commandstats(watch.redis_client)
        delta = {name: calls - redis_before.get(name, (0, 0))[0] for name, (calls, _) in after.items()}
        # Scripts only: the commands a script runs count their time in its line too.
        usec = sum(
            used - redis_before.get(name, (0, 0))[1]
            for name, (_, used) in after.items()
            if name in SCRIPT_CALLS
        )
        per = 1 / result.total if result.total else float("nan")
        row["redis_script_us_per_req"] = usec * per
        row["redis_cmds_per_req"] = sum(delta.values()) * per
        row["redis_scripts_per_req"] = sum(delta.get(name, 0) for name in SCRIPT_CALLS) * per
        row["redis_evalsha"] = delta.get("evalsha", 0)
        row["redis_per_req"] = {name: n * per for name, n in delta.items() if n}
    return row


def commandstats(client: Any) -> dict[str, tuple[int, int]]:
    """Calls and Redis CPU microseconds per command so far, leaving out this bench's own INFO."""
    if client is None:
        return {}
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


SCRIPT_CALLS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro")
SUMMED = ("errors", "timeouts", "n", "total")


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats; errors summed; RSS the peak of all runs (and the lowest at a run's start)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values: list[Any] = [run.get(key) for run in runs]
        numbers = [v for v in values if isinstance(v, int | float)]
        if key == "error_kinds":
            names = sorted({name for v in values for name in v})
            out[key] = {name: sum(v.get(name, 0) for v in values) for name in names}
        elif isinstance(values[0], dict):
            names = sorted({name for v in values for name in v})
            out[key] = {name: statistics.median(v.get(name, 0) for v in values) for name in names}
        elif not numbers:
            out[key] = None
        elif key in SUMMED:
            out[key] = sum(numbers)
        elif key == "rss_mb":
            out[key] = max(numbers)
        elif key == "rss_start_mb":
            out[key] = min(numbers)
        else:
            out[key] = statistics.median(numbers)
    return out
