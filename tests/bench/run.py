"""`make bench`: the benchmark of record. Direct to the simulator vs through router, in one run.

Scenarios: c=1 and c=64 (non-stream), 500 in flight against a 200 ms upstream, stream c=32 and
stream c=1000 (200 chunks 20 ms apart). Each runs against the simulator directly and through
each router profile, back to back, --repeat times; medians are printed, and one JSON line per
scenario x target is appended to --results. Then the translated APIs (`--only api`: streams of
/v1/messages and /v1/responses at c=1 and c=32, /v1/embeddings at c=32), each against its chat
twin through the same router, interleaved (pairs.py).

Profiles, each one router process started once: `bare` (no clients, memory:// state) and
`full` (a client key, client and provider-key limits, a budget, state on a real redis-server
started here, metrics, JSON logs to a file). Both log to a file, as under Kubernetes.

Placement on two or more cores: router alone on one core; simulators, Redis and, through
router, the load generator on the other. Direct, the load generator takes the idle router
core. Then two short passes: `--workers 2` scaling (c=64, unpinned, both cores shared with
simulator and load generator), Redis round trips per request through a counting relay, and what
a request costs a Redis alone on a core (redis_cost.py).

    python -m tests.bench.run [--seconds 5] [--repeat 3] [--only c=1,c=64] [--profiles bare,full]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.bench import checks, pairs, redis_cost, relay, report, spy
from tests.bench.scenarios import SCENARIOS, Scenario, Target, Watch, combine, measure, select
from tests.bench.servers import (
    PROFILES,
    SIMS,
    Child,
    Profile,
    start_router,
    start_sim,
    write_config,
)
from tests.redis_rig import RedisServer

DIRECT_KEY = b"Authorization: Bearer bench-key\r\n"
"""Direct to a simulator: its provider key, as router sends it."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario and target (default 3)")
    parser.add_argument("--results", default="bench-results.jsonl", help="JSON lines appended here")
    keys = ",".join(s.key for s in SCENARIOS)
    parser.add_argument("--only", help=f"scenarios, comma-separated: {keys} (api: the last five)")
    parser.add_argument("--profiles", default="bare,full", help="router profiles (default bare,full)")
    parser.add_argument("--skip", default="", help="passes to leave out: scaling,relay,redis")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, router logs)")
    parser.add_argument(
        "--spy",
        action="store_true",
        help="one more run per scenario and router, under py-spy (where time goes)",
    )
    args = parser.parse_args()
    args.scenarios = select(args.only)
    names = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if unknown := [p for p in names if p not in PROFILES]:
        parser.error(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    args.profile_list = [PROFILES[p] for p in names]
    args.skip_set = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.spy:
        spy.binary()  # here, not in the timer's thread, where its SystemExit would go unheard
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cores = set(os.sched_getaffinity(0))
        ordered = sorted(self.cores)
        self.pinned = len(ordered) >= 2
        self.router_core = ordered[1] if self.pinned else None
        self.other_core = ordered[0] if self.pinned else None
        self.workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
        self.children: list[Child] = []
        self.sims: dict[str, tuple[Child, int]] = {}
        self.routers: dict[str, tuple[Child, int]] = {}
        self.redis: RedisServer | None = None
        self.redis_client: Any = None
        self.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.timings: dict[str, float] = {}
        self.profiles: list[tuple[str, str, spy.Profile]] = []
        """(scenario, router profile, what py-spy saw) with --spy."""
        self.pair_profiles: list[pairs.Spied] = []
        """What py-spy saw of each side of a pair, with --spy."""
        self.commit = checks.commit()
        skip, profiles = args.skip_set, args.profile_list
        self.do_scaling = "scaling" not in skip and any(s.key == "c=64" for s in args.scenarios)
        self.do_relay = "relay" not in skip and any(p.redis for p in profiles)
        self.do_redis_cost = "redis" not in skip and any(p.redis for p in profiles)

    def only(self, core: int | None) -> set[int]:
        return {core} if core is not None else self.cores

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "seconds": self.args.seconds,
            "repeat": self.args.repeat,
            "pinned": self.pinned,
            "cores": len(self.cores),
            "commit": self.commit,
            **extra,
        }

    def start(self) -> None:
        for name in sorted({s.sim for s in self.args.scenarios}):
            child, port = start_sim(name, self.other_core)
            self.children.append(child)
            self.sims[name] = (child, port)
        if any(p.redis for p in self.args.profile_list) or self.do_scaling or self.do_relay:
            self.redis = RedisServer().start()
            if self.other_core is not None:
                os.sched_setaffinity(self.redis.pid or 0, {self.other_core})
            self.redis_client = self.redis.client()
        ports = {name: port for name, (_, port) in self.sims.items()}
        for profile in self.args.profile_list:
            url = self.redis.url if self.redis else None
            config = write_config(profile, ports, self.workdir, url)
            log = self.workdir / f"router-{profile.name}.log"
            child, port = start_router(profile, config, self.router_core, log)
            self.children.append(child)
            self.routers[profile.name] = (child, port)

    def targets(self, scenario: Scenario) -> list[Target]:
        if scenario.api != "chat":
            routers = [(p, *self.routers[p.name]) for p in self.args.profile_list]
            return pairs.targets(scenario, routers, self.only(self.other_core))
        port = self.sims[scenario.sim][1]
        direct = Target(
            "direct", port, "/chat/completions", "gpt-4o", DIRECT_KEY, cores=self.only(self.router_core)
        )
        out = [direct]
        for profile in self.args.profile_list:
            child, rport = self.routers[profile.name]
            out.append(
                Target(
                    profile.name,
                    rport,
                    "/v1/chat/completions",
                    SIMS[scenario.sim][0],
                    profile.headers,
                    child,
                    self.only(self.other_core),
                    redis=profile.redis,
                    profile=profile.name,
                )
            )
        return out

    def scenario(self, scenario: Scenario) -> list[tuple[str, dict[str, Any]]]:
        began = time.monotonic()
        targets = self.targets(scenario)
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        sim = self.sims[scenario.sim][0]
        for r in range(self.args.repeat):
            # interleaved, so drift in the machine touches every target alike
            for target in targets if scenario.api == "chat" else pairs.ordered(targets, r):
                watch = Watch(sim, self.redis.pid if self.redis else None)
                if target.redis:
                    watch.redis_client = self.redis_client
                row = measure(scenario, target, watch, self.args.seconds)
                runs[target.name].append(row)
                report.progress(f"{scenario.name} {target.name} run {r + 1}/{self.args.repeat}", row)
        rows = [(t.name, combine(runs[t.name])) for t in targets]
        spied = {t.name: self.spied(scenario, t, sim) for t in targets if t.router} if self.args.spy else {}
        lines = []
        for target, (name, row) in zip(targets, rows, strict=True):
            line = {
                "time": self.run_id,
                "scenario": scenario.name,
                "target": name,
                "profile": target.profile,
                "settings": self.settings(
                    concurrency=scenario.concurrency,
                    stream=scenario.stream,
                    sim=SIMS[scenario.sim][1],
                    warmup=scenario.warmup,
                    ramp=scenario.ramp,
                    loadgen_cores=sorted(target.cores or ()),
                    router_core=self.router_core if target.router else None,
                    router=PROFILES[target.profile].describe() if target.profile else None,
                    **({"api": target.api} if scenario.api != "chat" else {}),
                ),
                "median": row,
                "runs": runs[name],
            }
            if scenario.api != "chat":
                if target.api != "chat":
                    line["vs_chat"] = pairs.versus(row, dict(rows)[f"{target.profile}/chat"])
            elif name != "direct":
                line["vs_direct"] = report.added(row, rows[0][1])
            found = spied.get(name)
            if found is not None:
                line["spy"] = found.as_json()
            lines.append(line)
        report.write_lines(self.args.results, lines)
        self.timings[scenario.name] = time.monotonic() - began
        return rows

    def spied(self, scenario: Scenario, target: Target, sim: Child) -> spy.Profile | None:
        """One more run (not in the medians) with py-spy on the router over its measured seconds."""
        assert target.router is not None
        pid, seconds = target.router.pid, self.args.seconds
        out = self.workdir / f"spy-{scenario.key}-{target.name.replace('/', '-')}.raw"
        started: list[subprocess.Popen[bytes]] = []
        timer = threading.Timer(scenario.warmup, lambda: started.append(spy.start(pid, seconds, out)))
        timer.start()
        try:
            row = measure(scenario, target, Watch(sim, self.redis.pid if self.redis else None), seconds)
        except BaseException:
            for process in started:  # py-spy is ours: stopped by its PID
                process.kill()
                process.wait()
            raise
        finally:
            timer.cancel()
            timer.join()
        report.progress(f"{scenario.name} {target.name} under py-spy", row)
        profile = spy.finish(started[0], out, seconds) if started else None
        if profile is not None and scenario.api == "chat":
            self.profiles.append((scenario.name, target.name, profile))
        elif profile is not None:
            assert target.profile is not None
            label = scenario.name if target.api != "chat" else f"{scenario.name}, chat twin"
            self.profiles.append((label, target.profile, profile))
            cpu = row["router_cpu_ms_per_req"]
            self.pair_profiles.append(pairs.Spied(scenario, target.profile, target.api, profile, cpu))
        return profile

    def scaling(self) -> dict[str, Any]:
        """c=64 through `--workers 2` vs one worker, same config (no clients, Redis state: --workers
        needs it), everything unpinned on every core."""
        began = time.monotonic()
        scenario = next(s for s in SCENARIOS if s.key == "c=64")
        sim, sim_port = self.sims["fast"]
        assert self.redis is not None
        sim.pin(None)
        os.sched_setaffinity(self.redis.pid or 0, self.cores)
        started: list[Child] = []
        try:
            targets = []
            for workers in (1, 2):
                profile = Profile("bare-redis", workers=workers, redis=True)
                config = write_config(
                    profile, {"fast": sim_port}, self.workdir, self.redis.url, f"-x{workers}"
                )
                log = self.workdir / f"router-bare-redis-x{workers}.log"
                child, port = start_router(profile, config, None, log, tag=f"-x{workers}")
                started.append(child)
                path = "/v1/chat/completions"
                targets.append(Target(f"x{workers}", port, path, "gpt-4o", b"", child, self.cores))
            runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
            for r in range(self.args.repeat):
                for target in targets:
                    row = measure(scenario, target, Watch(sim, self.redis.pid), self.args.seconds)
                    runs[target.name].append(row)
                    report.progress(f"scaling c=64 workers {target.name} run {r + 1}/{self.args.repeat}", row)
        finally:
            for child in started:
                child.stop()
            sim.pin(self.other_core)
            if self.other_core is not None:
                os.sched_setaffinity(self.redis.pid or 0, {self.other_core})
        rows = {name: combine(r) for name, r in runs.items()}
        out = {"x1": rows["x1"], "x2": rows["x2"], "ratio": rows["x2"]["rps"] / rows["x1"]["rps"]}
        report.write_lines(
            self.args.results,
            [
                {
                    "time": self.run_id,
                    "scenario": "c=64 --workers",
                    "target": name,
                    "profile": "bare-redis",
                    "settings": self.settings(concurrency=64, workers=int(name[1:]), unpinned=True),
                    "median": row,
                    "runs": runs[name],
                }
                for name, row in rows.items()
            ],
        )
        self.timings["scaling"] = time.monotonic() - began
        return out

    def relay(self) -> dict[str, Any]:
        began = time.monotonic()
        assert self.redis is not None
        os.sched_setaffinity(0, self.only(self.other_core))
        out = relay.run(self.redis.port, self.router_core, self.other_core, self.workdir)
        line = {"time": self.run_id, "scenario": "redis round trips", "target": "full", "profile": "full"}
        report.write_lines(self.args.results, [{**line, "settings": self.settings(), "median": out}])
        self.timings["relay"] = time.monotonic() - began
        return out

    def redis_cost(self) -> dict[str, Any]:
        began = time.monotonic()
        driver = self.only(self.other_core)  # Redis gets the router's core: the routers are idle now
        out = redis_cost.run(self.router_core, driver)
        line = {"time": self.run_id, "scenario": "redis cost", "target": "full", "profile": "full"}
        report.write_lines(self.args.results, [{**line, "settings": self.settings(), "median": out}])
        self.timings["redis cost"] = time.monotonic() - began
        return out

    def metrics(self) -> dict[str, float]:
        """router_requests_total summed, per profile, from each router's /metrics: metrics are on."""
        out = {}
        for name, (_, port) in self.routers.items():
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            out[name] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("router_requests_total{")
            )
        return out

    def stop(self) -> None:
        for child in reversed(self.children):  # only what this run started, by PID
            child.stop()
        if self.redis_client is not None:
            self.redis_client.close()
        if self.redis is not None:
            self.redis.close()
        os.sched_setaffinity(0, self.cores)
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    args = parse()
    bench = Bench(args)
    began = time.monotonic()
    groups, paired, scaling, relayed, cost = [], [], None, None, None
    try:
        bench.start()
        for scenario in args.scenarios:
            rows = bench.scenario(scenario)
            if scenario.api == "chat":
                groups.append((scenario.name, scenario.stream, rows))
            else:
                paired.append((scenario, rows))
        if bench.do_scaling:
            scaling = bench.scaling()
        if bench.do_relay:
            relayed = bench.relay()
        if bench.do_redis_cost:
            cost = bench.redis_cost()
        logs = checks.log_summary(bench.workdir)
        metrics = bench.metrics()
    finally:
        bench.stop()
    elapsed = time.monotonic() - began
    placement = (
        f"router pinned to core {bench.router_core}; sims, redis and (through router) the load generator on "
        f"core {bench.other_core}; direct, the load generator on core {bench.router_core}"
        if bench.pinned
        else "one core: nothing pinned"
    )
    header = (
        f"router bench {bench.run_id} ({placement}; {args.seconds:g} s per run, median of {args.repeat}; "
        f"total {elapsed:.0f} s)"
    )
    print()
    if groups:
        print(report.table(groups, header))
        print()
        print(report.cpu_table(groups))
    else:
        print(header)
    print()
    if paired:
        print(pairs.table(paired, args.repeat))
        print()
    for line in [*spy.tables(bench.profiles), *pairs.spy_lines(bench.pair_profiles)]:
        print(line)
    if cost:
        print("\n".join(redis_cost.lines(cost)) + "\n")
    for line in pairs.notes(paired):
        print(line)
    for line in checks.notes(groups, scaling, relayed, logs, metrics, bench.timings):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
