"""The notes under the table: Redis use, scaling, memory, whether the load generator kept up,
the router's logs, the issue's goals met or not, and where the time went."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

from tests.bench import report
from tests.bench.servers import ROOT

Groups = list[tuple[str, bool, list[tuple[str, dict[str, Any]]]]]
KEEP_UP_MS = 1.0
"""Direct streams whose gap p50 exceeds the simulator's nominal gap by more than this, or a load
generator busier than BUSY % of its core: it is not keeping up, and gap growth says little."""
BUSY = 85


def commit() -> str | None:
    """HEAD, with "+dirty" when the working tree has changes (the figures are of the tree, not HEAD)."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        status = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True)
    except OSError:
        return None
    return (head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")) or None


def log_summary(directory: Path) -> dict[str, dict[str, int]]:
    """Per router log file: lines, and lines at warning and error (never their text: no prompts, no keys,
    but no need to print them either)."""
    out = {}
    for path in sorted(directory.glob("router-*.log")):
        counts = {"lines": 0, "warning": 0, "error": 0}
        with path.open("rb") as f:
            for line in f:
                counts["lines"] += 1
                if b'"level":"warning"' in line:
                    counts["warning"] += 1
                elif b'"level":"error"' in line or b'"level":"critical"' in line:
                    counts["error"] += 1
        out[path.stem.removeprefix("router-")] = counts
    return out


def _find(groups: Groups, scenario: str, target: str) -> dict[str, Any] | None:
    for name, _, rows in groups:
        if name == scenario:
            for row_target, row in rows:
                if row_target == target:
                    return row
    return None


def keep_up(groups: Groups) -> list[str]:
    out = []
    for name, stream, rows in groups:
        if not stream:
            continue
        nominal = 20.0 if name == "stream c=1000" else 2.0
        direct = rows[0][1]
        cpu = direct["cpu_pct"]
        ok = direct["gap_p50"] - nominal <= KEEP_UP_MS and cpu["loadgen"] < BUSY
        verdict = "keeps up" if ok else "DOES NOT keep up"
        out.append(
            f"  {name}: direct gap p50/p99 {direct['gap_p50']:.2f}/{direct['gap_p99']:.2f} ms vs "
            f"{nominal:g} ms nominal (timers round up to 1 ms): {verdict}; loadgen {cpu['loadgen']:.0f}% "
            f"of a core, sim {cpu.get('sim', math.nan):.0f}%"
        )
        for target, row in rows[1:]:
            cpu = row["cpu_pct"]
            shared = cpu["loadgen"] + cpu.get("sim", 0) + cpu.get("redis", 0)
            warn = f" (SATURATED above {BUSY}%: router figures understated)" if shared >= BUSY else ""
            out.append(
                f"  {'':<{len(name)}}  through {target}: loadgen {cpu['loadgen']:.0f}% + sim "
                f"{cpu.get('sim', math.nan):.0f}% + redis {cpu.get('redis', 0):.0f}% on the shared core"
                f"{warn}; router {cpu.get('router', math.nan):.0f}%"
            )
    return out


def goals(groups: Groups, scaling: dict[str, Any] | None, relayed: dict[str, Any] | None) -> list[str]:
    """The issue's goals against the full profile (else the last profile measured)."""
    out = []

    def row(scenario: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
        direct = _find(groups, scenario, "direct")
        for profile in ("full", "bare"):
            found = _find(groups, scenario, profile)
            if found is not None:
                return direct, found, profile
        return direct, None, ""

    def line(ok: bool, text: str) -> None:
        out.append(f"  [{'met' if ok else 'NOT met'}] {text}")

    direct, r, p = row("c=1")
    if direct and r:
        a50, a99 = r["p50"] - direct["p50"], r["p99"] - direct["p99"]
        line(a50 <= 0.3 and a99 <= 1.0, f"c=1 added p50 {a50:.3f} ms (<= 0.3), p99 {a99:.3f} ms (<= 1) [{p}]")
    direct, r, p = row("c=64")
    if r:
        line(r["rps"] >= 3000, f"c=64 {r['rps']:.0f} req/s (>= 3000) [{p}]")
    direct, r, p = row("500 in flight")
    if r:
        rss = r["rss_mb"] or math.nan
        ok = r["rps"] >= 2300 and r["p99"] <= 260 and rss <= 150
        line(ok, f"500 in flight {r['rps']:.0f} req/s (>= 2300), p99 {r['p99']:.0f} ms (<= 260), "
                 f"RSS {rss:.0f} MB (<= 150) [{p}]")  # fmt: skip
    for scenario in ("stream c=1", "stream c=32", "stream c=1000"):
        direct, r, p = row(scenario)
        if direct and r:
            added = r["ttft_p50"] - direct["ttft_p50"]
            line(added <= 0.5, f"{scenario} added TTFT p50 {added:.3f} ms (<= 0.5) [{p}]")
    direct, r, p = row("stream c=1000")
    if direct and r:
        grow = r["gap_p99"] - direct["gap_p99"]
        line(
            grow <= 1.0 and r["errors"] == 0,
            f"stream c=1000 gap p99 growth {grow:+.2f} ms (<= 1), errors {r['errors']} [{p}]",
        )
    if scaling:
        line(scaling["ratio"] >= 1.7, f"--workers 2 {scaling['ratio']:.2f}x one worker (>= 1.7)")
    if relayed:
        plain, stream = relayed["plain"], relayed["stream"]
        ok = max(plain["before"], plain["after"], stream["before"], stream["after"]) <= 1.0
        line(
            ok,
            f"Redis round trips before/after: non-stream {plain['before']:.2f}/{plain['after']:.2f}, "
            f"stream {stream['before']:.2f}/{stream['after']:.2f} (<= 1 each, none per chunk)",
        )
    return out


def notes(
    groups: Groups,
    scaling: dict[str, Any] | None,
    relayed: dict[str, Any] | None,
    logs: dict[str, dict[str, int]],
    metrics: dict[str, float],
    timings: dict[str, float],
) -> list[str]:
    out: list[str] = []
    redis = report.redis_lines(groups)
    if redis:
        out += [
            "Redis per request (INFO commandstats delta / requests answered, warm-up included; the commands "
            "a script runs count too):"
        ]
        out += [*redis, ""]
    if relayed:
        out += [*report.relay_lines(relayed), ""]
    if scaling:
        x1, x2 = scaling["x1"], scaling["x2"]
        out.append(
            f"--workers 2 scaling, c=64 non-stream, no clients + Redis state (--workers needs it), nothing "
            f"pinned: 1 worker {x1['rps']:.0f} req/s, 2 workers {x2['rps']:.0f} req/s = "
            f"{scaling['ratio']:.2f}x "
            f"(RSS {x2['rss_mb']:.0f} MB for all processes). The simulator, Redis and the load generator "
            "share the same 2 cores, so this understates what 2 dedicated cores would give."
        )
        out.append(
            f"  router CPU: 1 worker {x1['cpu_pct']['router']:.0f}% of a core, "
            f"{x1['router_cpu_ms_per_req']:.3f} ms/request; 2 workers {x2['cpu_pct']['router']:.0f}%, "
            f"{x2['router_cpu_ms_per_req']:.3f} ms/request"
        )
        bare = _find(groups, "c=64", "bare")
        if bare:
            out.append(f"  2 workers vs bare pinned to one core: {x2['rps'] / bare['rps']:.2f}x")
        out.append("")
    errors = [
        f"  {name} {target}: " + ", ".join(f"{kind} x{n}" for kind, n in row.get("error_kinds", {}).items())
        for name, _, rows in groups
        for target, row in rows
        if row["errors"]
    ]
    if errors:
        out += ["Errors by kind (HTTP status, lost connection, stream without [DONE], timeout):", *errors, ""]
    keep = keep_up(groups)
    if keep:
        out += [
            "Does the load generator keep up with the streams? (if not, gap growth says little):",
            *keep,
            "",
        ]
    if logs:
        text = ", ".join(
            f"{name} {c['lines']} lines ({c['warning']} warning, {c['error']} error)"
            for name, c in logs.items()
        )
        out += [f"Router JSON logs (to files): {text}"]
    if metrics:
        counted = ", ".join(f"{name} {n:.0f}" for name, n in metrics.items())
        out.append(f"Metrics on: router_requests_total at the end: {counted}")
    if logs or metrics:
        out.append("")
    done = goals(groups, scaling, relayed)
    if done:
        out += ["Goals (issue 6):", *done, ""]
    if timings:
        out.append("Seconds per part: " + ", ".join(f"{name} {t:.0f}" for name, t in timings.items()))
    return out
