"""What a bench run prints, and the JSON lines it appends to the results file."""

from __future__ import annotations

import math
import sys
from typing import Any

import orjson

Row = dict[str, Any]


def num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def ms(value: float, sign: str = "") -> str:
    """Milliseconds with three significant decimals where they mean something: 0.123, 12.35, 4103.4."""
    size = abs(value)
    return format(value, sign + (".3f" if size < 10 else ".2f" if size < 100 else ".1f"))


def _with_delta(value: float | None, base: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if base is None or math.isnan(base):
        return ms(value)
    return f"{ms(value)} {ms(value - base, '+')}"


def added(row: Row, direct: Row) -> dict[str, float]:
    """A router row against its direct row: added latency, TTFT and gap, and the req/s ratio."""
    out = {key: row[key] - direct[key] for key in ("p50", "p99", "ttft_p50", "gap_p50", "gap_p99")}
    out["ratio"] = row["rps"] / direct["rps"] if direct["rps"] else float("nan")
    return {key: value for key, value in out.items() if not math.isnan(value)}


def table(groups: list[tuple[str, bool, list[tuple[str, Row]]]], header: str) -> str:
    """groups: (scenario name, is stream, [(target, row)...]) with the direct row first.
    Router rows show their value and, after it, the difference from direct."""
    head = (
        f"{'scenario':<14} {'target':<8} {'p50 ms':>17} {'p99 ms':>17} {'req/s':>7} {'ratio':>6} "
        f"{'ttft p50 ms':>15} {'gap p50/p99 ms':>27} {'rss MB':>6} {'errors':>6}"
    )
    lines = [header, "", head, "-" * len(head)]
    for name, stream, rows in groups:
        direct = rows[0][1]
        for i, (target, row) in enumerate(rows):
            base = None if i == 0 else direct
            ratio = row["rps"] / direct["rps"] if direct["rps"] else float("nan")
            ttft = _with_delta(row["ttft_p50"], base["ttft_p50"] if base else None) if stream else ""
            gap = ""
            if stream:
                gap = f"{num(row['gap_p50'], '.2f')}/{num(row['gap_p99'], '.2f')}"
                grow = [row[k] - base[k] for k in ("gap_p50", "gap_p99")] if base is not None else []
                if grow and not any(math.isnan(g) for g in grow):
                    gap += f" {grow[0]:+.2f}/{grow[1]:+.2f}"
            lines.append(
                f"{name if i == 0 else '':<14} {target:<8} "
                f"{_with_delta(row['p50'], base['p50'] if base else None):>17} "
                f"{_with_delta(row['p99'], base['p99'] if base else None):>17} "
                f"{row['rps']:7.0f} {ratio:6.2f} {ttft:>15} {gap:>27} "
                f"{num(row.get('rss_mb'), '.0f'):>6} {row['errors']:6d}"
            )
    lines.append("")
    lines.append(
        "Medians over repeats; router rows add the difference from direct after each value; errors are "
        "summed over repeats (non-200, lost connections, streams without [DONE], timeouts); rss is the peak "
        "VmRSS of the router (and its workers) over every run."
    )
    return "\n".join(lines)


def cpu_table(groups: list[tuple[str, bool, list[tuple[str, Row]]]]) -> str:
    lines = ["CPU, % of one core, during each run (medians), and router CPU per request:", ""]
    lines.append(
        f"{'scenario':<14} {'target':<8} {'loadgen':>8} {'sim':>6} {'router':>7} {'redis':>6} "
        f"{'router ms/req':>14} {'rss MB start':>13}"
    )
    for name, _, rows in groups:
        for i, (target, row) in enumerate(rows):
            cpu = row["cpu_pct"]
            cells = [num(cpu.get(k), ".0f") for k in ("loadgen", "sim", "router", "redis")]
            per = num(row.get("router_cpu_ms_per_req"), ".3f")
            lines.append(
                f"{name if i == 0 else '':<14} {target:<8} {cells[0]:>8} {cells[1]:>6} {cells[2]:>7} "
                f"{cells[3]:>6} {per:>14} {num(row.get('rss_start_mb'), '.0f'):>13}"
            )
    return "\n".join(lines)


def redis_lines(groups: list[tuple[str, bool, list[tuple[str, Row]]]]) -> list[str]:
    """Redis commands per request for every row that ran on Redis, and whether scripts ran at all."""
    out = []
    for name, _, rows in groups:
        for target, row in rows:
            if "redis_cmds_per_req" not in row:
                continue
            commands = row.get("redis_per_req") or {}
            top = sorted(commands.items(), key=lambda kv: -kv[1])[:5]
            detail = ", ".join(f"{cmd} {n:.2f}" for cmd, n in top)
            out.append(
                f"  {name:<14} {target:<6} {row['redis_scripts_per_req']:.2f} script calls (EVALSHA), "
                f"{row['redis_cmds_per_req']:.2f} commands in all: {detail or 'nothing'}; "
                f"{row.get('redis_script_us_per_req', float('nan')):.0f} us of Redis CPU in the scripts"
            )
            if not row["redis_evalsha"]:
                out.append(f"  WARNING: no EVALSHA reached Redis in {name} {target}: the profile skips Redis")
    return out


def relay_lines(relay: dict[str, Any]) -> list[str]:
    out = [
        f"Redis round trips per request (full profile through a counting TCP relay, {relay['requests']} "
        f"sequential requests, upstream answering after {relay['upstream_latency_ms']:.0f} ms; "
        "not used for any throughput figure):"
    ]
    for kind in ("plain", "stream"):
        r = relay[kind]
        what = f"stream of {r['chunks']} chunks" if kind == "stream" else "non-stream"
        out.append(
            f"  {what:<20} {r['per_request']:.2f} per request: {r['before']:.2f} before the upstream call, "
            f"{r['after']:.2f} after; besides, {r['background']} of the process's own (lease renewals, "
            f"gauge reads) in {r['background_s']:.1f} s; errors {r['errors']}"
        )
    return out


def progress(what: str, row: Row) -> None:
    """One run's figures, as it ends (on stderr: the tables go to stdout)."""
    gap = f", gap p99 {row['gap_p99']:.2f} ms" if row["gap_p99"] == row["gap_p99"] else ""
    print(
        f"  {what}: {row['rps']:.0f} req/s, p50 {row['p50']:.3f} ms, p99 {row['p99']:.3f} ms{gap}, "
        f"errors {row['errors']}",
        file=sys.stderr,
        flush=True,
    )


def write_lines(path: str, lines: list[dict[str, Any]]) -> None:
    with open(path, "ab") as out:
        for line in lines:
            out.write(orjson.dumps(line) + b"\n")
