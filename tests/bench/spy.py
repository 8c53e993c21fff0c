"""Where a router's time goes during one run: py-spy samples, grouped by the code they were in.

`make bench ARGS="--spy"` attaches py-spy to each router (one worker) for one extra run of each
scenario, not counted in the medians. Each sample is put under the group of the frame it was
taken in (its leaf), so a group's share is the CPU spent in that code itself, not in what it
called. Samples are taken only while the router's thread is on a CPU (py-spy leaves idle ones
out), so `busy` is the share of the run the router was computing.

py-spy cannot see into C: the time of a C call (a socket write, uvloop's own loop) shows on the
Python line that made it. Hence "event loop": uvloop running its callbacks and reading sockets.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RATE = 250
"""Samples a second: enough for ~1 % resolution in a 5 s run, light enough not to slow the router."""

GROUPS: tuple[tuple[str, str], ...] = (
    # (where the leaf frame's file is, the group); first match wins
    ("/router/state/", "state store: memory or Redis (scripts' calls, replies), guard"),
    ("/redis/", "redis-py: pool, connection, parser"),
    ("/hiredis", "redis-py: pool, connection, parser"),
    ("/asyncio/streams.py", "redis-py: pool, connection, parser"),  # only redis-py uses streams here
    ("/router/http1/", "provider client (http1, upstream)"),
    ("/router/upstream.py", "provider client (http1, upstream)"),
    ("/router/admission.py", "settlement and limits (admission, settlement, ledger, limits)"),
    ("/router/settlement.py", "settlement and limits (admission, settlement, ledger, limits)"),
    ("/router/ledger.py", "settlement and limits (admission, settlement, ledger, limits)"),
    ("/router/limits.py", "settlement and limits (admission, settlement, ledger, limits)"),
    ("/router/metrics.py", "metrics and the access line"),
    ("/router/access.py", "metrics and the access line"),
    ("/router/logs.py", "metrics and the access line"),
    ("/prometheus_client/", "metrics and the access line"),
    ("/router/responses.py", "stream relay (responses, relay, sse, watchdog)"),
    ("/router/relay.py", "stream relay (responses, relay, sse, watchdog)"),
    ("/router/sse.py", "stream relay (responses, relay, sse, watchdog)"),
    ("/router/watchdog.py", "stream relay (responses, relay, sse, watchdog)"),
    ("/router/api/", "API translation (router/api: messages, responses, embeddings)"),
    ("/router/", "router: envelope, handler, routing, translate, attempt"),
    ("/uvicorn/", "uvicorn's HTTP server"),
    ("/starlette/", "Starlette (Request)"),
    ("/asyncio/runners.py", "event loop (uvloop, in C: callbacks, socket I/O)"),
    ("/asyncio/", "asyncio (tasks, futures, timeouts, locks)"),
)
OTHER = "other (dataclasses, contextlib, ...)"


@dataclass
class Profile:
    """One run's samples, grouped."""

    samples: int
    seconds: float
    groups: dict[str, int]
    lines: dict[str, int]
    """Samples per leaf frame (function, file:line)."""
    stacks: dict[str, int] = field(default_factory=dict)
    """Samples per whole stack (`frame;...;leaf`), for what is asked later (functions)."""

    @property
    def busy(self) -> float:
        """Share of the run the router was on a CPU, by the sample count (0..1)."""
        return self.samples / (RATE * self.seconds) if self.seconds else 0.0

    def shares(self) -> dict[str, float]:
        return {name: n / self.samples for name, n in self.groups.items()} if self.samples else {}

    def top(self, n: int) -> list[tuple[str, float]]:
        ranked = sorted(self.lines.items(), key=lambda item: -item[1])[:n]
        return [(frame, count / self.samples) for frame, count in ranked]

    def functions(self, part: str) -> tuple[float, dict[str, tuple[float, float]]]:
        """The code whose path holds `part` (e.g. `router/api/`): the share of samples with any of
        it on the stack, and per function (its lines summed) the share of samples it was on the
        stack (inclusive) and the share taken in it (self: a C call it makes, orjson's, counts here)."""
        within = 0
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        for stack, n in self.stacks.items():
            frames = stack.split(";")
            seen = {function(frame) for frame in frames if part in frame}
            if seen:
                within += n
            inclusive.update(dict.fromkeys(seen, n))
            if part in frames[-1]:
                own[function(frames[-1])] += n
        if not self.samples:
            return 0.0, {}
        return within / self.samples, {
            name: (count / self.samples, own[name] / self.samples) for name, count in inclusive.items()
        }

    def as_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "busy": self.busy,
            "groups": self.shares(),
            "top": self.top(15),
        }


def binary() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--spy needs py-spy: .venv/bin/pip install py-spy")
    return found


def duration(seconds: float) -> int:
    """py-spy records whole seconds, at least one."""
    return max(1, round(seconds))


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` for `seconds` into `out` (py-spy's raw format); --nonblocking: without it
    py-spy pauses the router at every sample and the run measures py-spy."""
    command = [
        binary(), "record", "--pid", str(pid), "--duration", str(duration(seconds)),
        "--rate", str(RATE), "--format", "raw", "--output", str(out), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(spy: subprocess.Popen[bytes], out: Path, seconds: float) -> Profile | None:
    """Wait for py-spy and read what it wrote; None (and why, on stderr) if it could not sample."""
    try:
        _, err = spy.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.communicate()
        print("  py-spy did not finish; no profile for this run", file=sys.stderr)
        return None
    if spy.returncode != 0 or not out.exists():
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        print(f"  py-spy failed ({reason[0]}); no profile for this run", file=sys.stderr)
        return None
    return read(out.read_text(), duration(seconds))


def read(raw: str, seconds: float) -> Profile:
    """py-spy's raw format: one line per distinct stack, `frame;frame;...;leaf count`."""
    groups: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    stacks: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        total += n
        groups[group(leaf)] += n
        lines[leaf] += n
        stacks[stack] += n
    return Profile(total, seconds, dict(groups), dict(lines), dict(stacks))


def function(frame: str) -> str:
    """A frame without its line number: `StreamRelay.feed (router/relay.py)`."""
    name, _, where = frame.rpartition(" (")
    path, colon, _ = where.rpartition(":")
    return f"{name} ({path})" if name and colon else frame


def group(frame: str) -> str:
    """The group of a frame as py-spy names it: `function (path/file.py:line)`, the path short
    (`router/state/redis/__init__.py`, `redis/asyncio/connection.py`), hence the "/" put in front."""
    where = "/" + frame.rpartition(" (")[2]
    for part, name in GROUPS:
        if part in where:
            return name
    return OTHER


def table(profiles: list[tuple[str, Profile]]) -> str:
    """One column per (scenario, profile), one row per group: shares of the router's samples."""
    if not profiles:
        return ""
    names = [name for _, name in GROUPS]
    order = list(dict.fromkeys([*names, OTHER]))
    head = "| where the router's CPU went | " + " | ".join(label for label, _ in profiles) + " |"
    lines = [head, "|---|" + "---|" * len(profiles)]
    busy = " | ".join(f"{p.busy:.0%}" for _, p in profiles)
    lines.append(f"| busy (share of the run on a CPU) | {busy} |")
    for name in order:
        shares = [p.shares().get(name, 0.0) for _, p in profiles]
        if any(shares):
            lines.append(f"| {name} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    return "\n".join(lines)


def tables(profiles: list[tuple[str, str, Profile]]) -> list[str]:
    """A table (table()) per router profile, from (scenario, router profile, what py-spy saw)."""
    out = []
    for name in dict.fromkeys(profile for _, profile, _ in profiles):
        runs = [(scenario, found) for scenario, profile, found in profiles if profile == name]
        head = f"{name}: py-spy over one more run of each scenario ({RATE} samples/s), shares of its samples"
        out += [head, table(runs), ""]
    return out
