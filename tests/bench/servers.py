"""The processes a bench run starts: simulators, router profiles, Redis; and what /proc says about them.

Everything is a child of the bench, bound to 127.0.0.1, and stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx

from router.sim.dialects import DIALECTS

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o"
TICK = os.sysconf("SC_CLK_TCK")
ALL_CORES = frozenset(os.sched_getaffinity(0))
"""Where an unpinned process may run: every core the bench was given (read before it pins itself)."""


class Sim(NamedTuple):
    """A simulator the bench may start: (model routed to it, `router sim` options, ...)."""

    model: str
    options: list[str]
    dialect: str = "trinity"
    embedding_model: str | None = None
    """An embedding model it serves too (its dialect lists it: router/sim/dialects.py)."""


SIMS = {
    # --paced-whole: a whole answer takes as long as the stream, as a provider's does; else
    # a router reading it as a stream would be compared with a direct answer that took no time.
    "fast": Sim("gpt-4o", ["--chunks", "8", "--chunk-gap", "2ms", "--paced-whole"]),
    "slow": Sim("bench-slow", ["--latency", "200ms"]),
    "long": Sim("bench-long", ["--chunks", "200", "--chunk-gap", "20ms"]),
    # Embeddings against non-stream chat: real200's dialect, the one whose simulator serves an
    # embedding model. Nothing paced: each answer comes as fast as the simulator makes it.
    "rag": Sim("bench-rag", [], "real200", "text-embedding-3-small"),
}
LIMITS = "{rpm: 10000000, tpm: 100000000000, concurrency: 100000}"  # high enough never to refuse
ALLOWANCE = "{tokens: 1000000000000000, per: month}"


@dataclass
class Child:
    """One process this run started, and the core it is pinned to (None: free to move)."""

    name: str
    process: subprocess.Popen[bytes]
    core: int | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """This process and its descendants (uvicorn's workers under --workers)."""
        return [self.pid, *descendants(self.pid)]

    def pin(self, core: int | None) -> None:
        """To one core, or (None) to every core; workers included."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, _cores(core))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Profile:
    """A router configuration as the bench serves it."""

    name: str
    workers: int = 1
    clients: bool = False
    redis: bool = False
    key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_hex(16), repr=False)

    @property
    def headers(self) -> bytes:
        """What the load generator sends: the client key, where the profile has clients."""
        return f"Authorization: Bearer {self.key}\r\n".encode() if self.clients else b""

    def describe(self) -> dict[str, object]:
        """What the results file says of it."""
        return {
            "workers": self.workers,
            "clients": "one key; rpm/tpm/concurrency limits; token budget" if self.clients else None,
            "provider_limits": self.clients,
            "state": "redis (real redis-server)" if self.redis else "memory://",
            "metrics": True,
            "logs": "JSON lines to a file",
        }


PROFILES = {
    "bare": Profile("bare"),
    "full": Profile("full", clients=True, redis=True),
}


def write_config(
    profile: Profile, sims: dict[str, int], directory: Path, redis_url: str | None, tag: str = ""
) -> Path:
    """providers.yaml for a profile: one provider per simulator, each serving one chat model name
    (and its embedding model, if it has one)."""
    lines = []
    if profile.redis:
        assert redis_url is not None
        lines.append(f'state: {{url: "{redis_url}", on_failure: local, replicas: 1}}')
    if profile.clients:
        digest = hashlib.sha256(profile.key.encode()).hexdigest()
        lines += [
            "clients:",
            "  - name: bench",
            f'    key_sha256: "{digest}"',
            f"    limits: {LIMITS}",
            f"    budget: {ALLOWANCE}",
        ]
    lines.append("providers:")
    for name, port in sims.items():
        sim = SIMS[name]
        route = "{}" if sim.model == MODEL else f"{{upstream: {MODEL}}}"
        dialect = DIALECTS[sim.dialect]
        lines += [
            f"  sim-{name}:",
            f"    dialect: {sim.dialect}",
            f"    base_url: http://127.0.0.1:{port}{dialect.prefix}",
            "    keys: [bench-key]",
        ]
        if dialect.stream_usage == "none":  # as providers.yaml says of real200: else router waits for it
            lines.append("    stream_usage: false")
        if profile.clients:
            lines += [f"    limits: {LIMITS}", f"    quota: {ALLOWANCE}"]
        models = f"{sim.model}: {route}"
        if sim.embedding_model:
            models += f", {sim.embedding_model}: {{kind: embedding}}"
        lines.append(f"    models: {{{models}}}")
    path = directory / f"{profile.name}{tag}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_sim(name: str, core: int | None, extra: list[str] | None = None) -> tuple[Child, int]:
    port = free_port()
    options = SIMS[name].options if extra is None else extra
    dialect = SIMS[name].dialect
    command = [sys.executable, "-m", "router", "sim", "--dialect", dialect, "--port", str(port), *options]
    child = Child(f"sim-{name}", _popen(command, None), core)
    os.sched_setaffinity(child.pid, _cores(core))  # explicit: a child inherits the bench's own pinning
    _wait_or_stop(f"http://127.0.0.1:{port}/_sim/stats", child)
    return child, port


def start_router(
    profile: Profile, config: Path, core: int | None, log: Path, *, tag: str = ""
) -> tuple[Child, int]:
    """`router serve`, its JSON log lines (stderr) going to `log`: they are part of the cost measured."""
    port = free_port()
    command = [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)]
    if profile.workers > 1:
        command += ["--workers", str(profile.workers)]
    child = Child(f"router-{profile.name}{tag}", _popen(command, log), core, log)
    os.sched_setaffinity(child.pid, _cores(core))  # before uvicorn starts any worker, which inherit it
    _wait_or_stop(f"http://127.0.0.1:{port}/healthz", child)
    if profile.workers > 1:  # every worker up, not just the first to answer
        deadline = time.monotonic() + 20
        while len(descendants(child.pid)) < profile.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        child.pin(core)
    return child, port


def _wait_or_stop(url: str, child: Child) -> None:
    try:
        wait_for(url, child)
    except BaseException:
        child.stop()
        raise


def _cores(core: int | None) -> set[int]:
    return {core} if core is not None else set(ALL_CORES)


def _popen(command: list[str], log: Path | None) -> subprocess.Popen[bytes]:
    if log is None:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)


def wait_for(url: str, child: Child | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            where = f"; see {child.log}" if child.log else ""
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}{where}")
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


# -- /proc -------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid, from /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks / TICK
