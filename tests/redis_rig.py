"""Real redis-server processes for the test suite: a single server and a three-master cluster.

Why real servers: the router's limits and exactly-once settlement rely on Redis semantics (Lua atomicity,
cluster hash slots, connection loss) that fakes get subtly wrong. Every process is a child of the test run,
bound to 127.0.0.1 on a free port, with persistence off (unless extra_args turn it on) and its own temp
directory, and is only ever ended by its own PID, so parallel runs and a developer's Redis are never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds for one redis-server to answer PING
CLUSTER_TIMEOUT = 20.0  # seconds for a new cluster to agree it is healthy
RESTART_TIMEOUT = 5.0  # seconds to keep retrying a restart on a port the kernel has not released yet
SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))

# Every redis-server this module started and has not yet reaped, by PID: the atexit fallback's list.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
# Temp directories not yet removed by close(), also cleaned up at exit.
_DIRS: set[Path] = set()


def _kill_leftovers() -> None:
    """Kill (by PID) whatever a crashed or interrupted run left running, so no redis-server outlives it."""
    for proc in list(_LIVE.values()):
        _kill(proc)
    for path in list(_DIRS):
        _remove_dir(path)


def _make_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _DIRS.add(path)
    return path


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _DIRS.discard(path)


atexit.register(_kill_leftovers)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL one child by its own PID and reap it; harmless if it has already exited."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _LIVE.pop(proc.pid, None)


def redis_server_path() -> str:
    """The redis-server on PATH. Missing means fail, never skip: a skipped Redis test hides real bugs."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(
            "redis-server is not installed: apt-get install -y redis-server (or brew install redis)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free now; callers retry if someone takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _client(port: int) -> redis.Redis:
    """A short-timeout client with no retries. redis-py 6+ retries a failed command 3 times with 1 s-based
    exponential backoff by default, which turns every readiness poll of a not-yet-listening server (and
    every probe of a stopped one) into a multi-second stall."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=1,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _info_field(text: str, field: str) -> str | None:
    """One `field:value` line of a CLUSTER INFO reply."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return value.strip()
    return None


class RedisServer:
    """One redis-server child on 127.0.0.1, persistence off by default, that tests may kill and restart."""

    def __init__(self, extra_args: Sequence[str] = (), workdir: Path | None = None) -> None:
        """extra_args are appended to the command line; workdir (kept on close) defaults to a new temp dir."""
        self._extra_args = list(extra_args)
        self._owns_workdir = workdir is None
        self._workdir = _make_dir("redis-rig-") if workdir is None else workdir
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisServer has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self._workdir / f"redis-{self._port}.log"

    def client(self) -> redis.Redis:
        """A fresh synchronous client for this server (caller closes it)."""
        return _client(self.port)

    def start(self) -> RedisServer:
        """Launch on a fresh free port; a port lost to a race is retried with another one."""
        if self.running:
            return self
        error: RuntimeError | None = None
        for _ in range(5):
            self._choose_ports()
            try:
                self._launch(deadline=time.monotonic() + START_TIMEOUT)
                return self
            except _PortInUse as exc:
                error = exc
        raise RuntimeError(f"redis-server could not find a free port: {error}")

    def restart(self) -> RedisServer:
        """Start again on the same port, so clients holding the URL reconnect, as after a Redis restart."""
        self.stop()
        deadline = time.monotonic() + RESTART_TIMEOUT
        while True:
            try:
                self._launch(deadline=time.monotonic() + START_TIMEOUT)
                return self
            except _PortInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGKILL by PID, no shutdown handshake: this is how tests simulate Redis dying."""
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    def close(self) -> None:
        """Stop and delete the temp directory (logs included)."""
        self.stop()
        if self._owns_workdir:
            _remove_dir(self._workdir)

    def flush(self) -> None:
        """FLUSHALL: tests sharing the session server start from an empty keyspace."""
        with self.client() as client:
            client.flushall()

    def _choose_ports(self) -> None:
        self._port = free_port()

    def _argv(self) -> list[str]:
        """The base options, then any subclass's, then extra_args last so they can override either."""
        return [*self._base_args(), *self._extra_args]

    def _base_args(self) -> list[str]:
        return [
            redis_server_path(),
            "--port", str(self.port),
            "--bind", HOST,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._workdir),
            "--logfile", "",
        ]  # fmt: skip

    def _launch(self, deadline: float) -> None:
        """Popen with output to the log, then wait until *this* process (checked by PID) answers PING."""
        with self.log_path.open("ab") as log:
            offset = log.tell()  # the log is appended to across restarts; only this launch's lines count
            proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _LIVE[proc.pid] = proc
        self._proc = proc
        while True:
            if proc.poll() is not None:
                self.stop()
                output = self._log_since(offset)
                if "Address already in use" in output:
                    raise _PortInUse(f"port {self.port} is in use:\n{output}")
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{output}")
            try:
                with self.client() as client:
                    # A PING from some other server that won the port would fool us; the PID cannot.
                    if client.ping() and int(client.info("server")["process_id"]) == proc.pid:
                        return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                output = self._log_since(offset)
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in time:\n{output}")
            time.sleep(0.02)

    def log_tail(self, limit: int = 4000) -> str:
        """The end of this server's log, for failure messages."""
        return self._log_since(0, limit)

    def _log_since(self, offset: int, limit: int = 4000) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")[-limit:]
        except OSError:
            return "(no log)"


class _PortInUse(RuntimeError):
    """redis-server exited because its port was taken (a free_port race or a port not yet released)."""


class RedisCluster:
    """Three cluster-mode masters (no replicas) owning slots 0-5460, 5461-10922, 10923-16383.

    Built with CLUSTER ADDSLOTSRANGE and CLUSTER MEET rather than redis-cli, so only redis-server is needed.
    Each node has its own subdirectory (its log, nodes-<port>.conf and, if extra_args turn persistence on, its
    AOF/RDB files), so restart() brings back the same cluster: same ports, node IDs, slots and persisted data.
    """

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        """extra_args are appended to every node's command line, e.g. ["--appendonly", "yes",
        "--appendfsync", "always"] so that writes survive stop() and come back with restart()."""
        self._extra_args = list(extra_args)
        self._workdir = _make_dir("redis-rig-cluster-")
        self.nodes: list[_ClusterNode] = []

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        if not self.nodes:
            raise RuntimeError("RedisCluster has not been started")
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    @property
    def running(self) -> bool:
        """Started and every node's process alive (which says nothing about cluster health)."""
        return bool(self.nodes) and all(node.running for node in self.nodes)

    def start(self) -> RedisCluster:
        """Start three nodes, assign slots, join them, and wait until every node says the cluster is ok."""
        try:
            for index, _ in enumerate(SLOT_RANGES):
                workdir = self._workdir / f"node-{index}"
                workdir.mkdir()
                node = _ClusterNode(workdir, self._extra_args)
                self.nodes.append(node)
                node.start()
            for node, (first, last) in zip(self.nodes, SLOT_RANGES, strict=True):
                with node.client() as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            # Node 0 meeting the others would suffice, but nodes 1 and 2 then learn of each other only by
            # gossip, which adds 0-2 s; meeting every pair directly makes startup a steady ~2 s.
            for index, node in enumerate(self.nodes):
                with node.client() as client:
                    for other in self.nodes[index + 1 :]:
                        client.execute_command("CLUSTER", "MEET", HOST, other.port, other.bus_port)
            self._wait_healthy(deadline=time.monotonic() + CLUSTER_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node by its PID, no shutdown handshake (so nothing is saved that was not already)."""
        for node in self.nodes:
            node.stop()

    def restart(self) -> RedisCluster:
        """Kill any node still running, start every node again on its own port and bus port with its own dir
        and nodes-<port>.conf, and wait until every node says the cluster is ok and knows all three.

        The cluster config brings back node IDs and slots; data comes back only if extra_args enabled AOF (or
        RDB that got saved). A restarted master waits ~2 s (Redis's writable delay) before reporting ok, so
        this costs a couple of seconds.
        """
        if not self.nodes:
            raise RuntimeError("RedisCluster has not been started")
        self.stop()
        for node in self.nodes:
            node.restart()
        self._wait_healthy(deadline=time.monotonic() + CLUSTER_TIMEOUT)
        return self

    def flush(self) -> None:
        """FLUSHALL on each master (FLUSHALL only ever empties the node it is sent to)."""
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        """Kill every node by its PID and delete the shared temp directory."""
        for node in self.nodes:
            node.close()
        _remove_dir(self._workdir)

    def _wait_healthy(self, deadline: float) -> None:
        """Gossip is asynchronous: wait until every node knows all three and sees all slots covered."""
        last: dict[int, str] = {}
        while True:
            healthy = True
            for node in self.nodes:
                if not node.running:
                    raise RuntimeError(f"redis cluster node on port {node.port} exited:\n{node.log_tail()}")
                try:
                    with node.client() as client:
                        info = str(client.execute_command("CLUSTER", "INFO"))
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # e.g. LOADING while a restarted node replays its AOF (BusyLoadingError subclasses this)
                    last[node.port] = f"{type(exc).__name__}: {exc}"
                    healthy = False
                    continue
                state = _info_field(info, "cluster_state")
                known = _info_field(info, "cluster_known_nodes")
                last[node.port] = f"cluster_state={state} cluster_known_nodes={known}"
                healthy = healthy and state == "ok" and known == str(len(self.nodes))
            if healthy:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster did not become healthy: {last}")
            time.sleep(0.05)


class _ClusterNode(RedisServer):
    """A cluster-mode RedisServer. Its bus gets its own free port: the default port+10000 may be taken
    or beyond 65535. The announce IP pins what CLUSTER SLOTS tells clients to 127.0.0.1."""

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__(extra_args=extra_args, workdir=workdir)
        self.bus_port = 0

    def _choose_ports(self) -> None:
        super()._choose_ports()
        self.bus_port = free_port()
        while self.bus_port == self._port:
            self.bus_port = free_port()

    def _base_args(self) -> list[str]:
        return [
            *super()._base_args(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self._workdir / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout", "2000",
            "--cluster-port", str(self.bus_port),
            "--cluster-announce-ip", HOST,
        ]  # fmt: skip
