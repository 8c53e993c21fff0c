"""The edge (router/edge.py) against real `router serve` processes on loopback: bounded heads,
read deadlines, the connection cap, protocol errors in JSON, and the metrics listener.

Each test talks raw HTTP/1.1 over sockets (an HTTP client would refuse to send what these send)
and bounds its own time; the routers are this module's, stopped by PID."""

from __future__ import annotations

import re
import resource
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import Served, free_port, serve, stop
from tests.redis_rig import RedisServer

PROVIDERS = "providers:\n  p:\n    base_url: http://127.0.0.1:9/v1\n    keys: [k]\n    models: {gpt-4o: {}}\n"
FAST = "header_timeout: 1s, body_idle_timeout: 1s, body_timeout: 3s, keepalive_timeout: 1s"
IDLE_CONNECTIONS = 2000


@dataclass
class Edge:
    served: Served
    port: int
    metrics_url: str

    def metric(self, name: str) -> float:
        text = httpx.get(self.metrics_url, timeout=5).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert found, name
        return float(found.group(1))


def start(tmp_path: Path, name: str, server: str) -> Edge:
    metrics_port = free_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"server: {{{server}, metrics_port: {metrics_port}}}\n" + PROVIDERS)
    served = serve("--config", str(path))
    port = int(served.url.rsplit(":", 1)[1])
    return Edge(served, port, f"http://127.0.0.1:{metrics_port}/metrics")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    # 2,000 connections held open here, and accepted by the router, which inherits this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * IDLE_CONNECTIONS + 512
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    e = start(tmp_path_factory.mktemp("edge"), "edge", f"{FAST}, max_headers: 30")
    yield e
    stop(e.served.process)


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    elapsed: float
    """From the first byte sent to the connection's end."""

    def error(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/json", self.headers
        payload: dict[str, dict[str, object]] = orjson.loads(self.body)
        return payload["error"]


def parse(raw: bytes, elapsed: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return Answer(None, {}, raw, elapsed)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body, elapsed)


def readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()  # not select.select: descriptors past 1024 when many are open
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def read_to_end(sock: socket.socket, deadline: float) -> bytes:
    """What the router sends until it closes (a reset counts as a close), or until `deadline`."""
    received = b""
    while time.monotonic() < deadline:
        if not readable(sock, deadline - time.monotonic()):
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"still open after the deadline; received {received[:200]!r}")


def exchange(port: int, data: bytes, *, within: float = 5.0) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        started = time.monotonic()
        if data:
            sock.sendall(data)
        raw = read_to_end(sock, started + within)
        return parse(raw, time.monotonic() - started)


def in_threads(*functions: Callable[[], None], meanwhile: Callable[[], None] = lambda: None) -> None:
    """Run each function in a thread, `meanwhile` in this one until they end; re-raise the first
    error any of them raised."""
    errors: list[BaseException] = []

    def run(function: Callable[[], None]) -> None:
        try:
            function()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f,)) for f in functions]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        meanwhile()
        time.sleep(0.02)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    assert found
    return int(found.group(1))


# -- protocol errors ------------------------------------------------------------------------------

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
MALFORMED = {
    "two equal Content-Lengths": CHAT + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "two different Content-Lengths": CHAT + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length with Transfer-Encoding": CHAT
    + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "a negative Content-Length": CHAT + b"Content-Length: -2\r\n\r\n{}",
    "a non-numeric Content-Length": CHAT + b"Content-Length: two\r\n\r\n{}",
    "a control byte in a header": CHAT + b"X-Note: a\x01b\r\nContent-Length: 2\r\n\r\n{}",
    "a space in a header name": CHAT + b"X Note: a\r\nContent-Length: 2\r\n\r\n{}",
    "a bad chunk size": CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "a byte over 127 in the query": b"GET /healthz?\xff HTTP/1.1\r\nHost: r\r\n\r\n",
}


def test_each_protocol_error_is_a_json_400(edge: Edge) -> None:
    for what, data in MALFORMED.items():
        answer = exchange(edge.port, data)
        assert answer.status == 400, what
        error = answer.error()
        assert error["type"] == error["code"] == "invalid_request_error", what
        assert str(error["message"]).startswith("Invalid HTTP request: "), what
        assert answer.headers["connection"] == "close"


# -- bounded heads ---------------------------------------------------------------------------------


def test_too_many_headers_is_431(edge: Edge) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(31))
    answer = exchange(edge.port, b"GET /healthz HTTP/1.1\r\nHost: r\r\n" + many + b"\r\n")
    assert answer.status == 431
    assert answer.error()["code"] == "request_header_fields_too_large"
    assert answer.error()["param"] is None
    at_the_limit = b"".join(b"X-H%d: v\r\n" % i for i in range(28))  # and Host, Connection: 30
    request = b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n" + at_the_limit + b"\r\n"
    assert exchange(edge.port, request).status == 200


def test_a_header_bomb_is_refused_without_buffering_it(edge: Edge) -> None:
    """4 connections each send an unfinished 32 MiB header value in 64 KiB pieces."""
    pid = edge.served.process.pid
    for _ in range(20):  # warm: what serving costs anyway
        assert httpx.get(edge.served.url + "/healthz").status_code == 200
    idle = rss_kib(pid)
    peak = idle
    outcomes: list[str] = []
    piece = b"a" * 65536

    def bomb() -> None:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            started = time.monotonic()
            sent = 0
            try:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nX-Bomb: ")
                while sent < 32 * 1024 * 1024:
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass  # closed under us: refused
            raw = read_to_end(sock, started + 15)
            answer = parse(raw, time.monotonic() - started)
            outcomes.append("closed" if answer.status is None else str(answer.status))
            if answer.status is not None:
                assert answer.error()["code"] == "request_header_fields_too_large"

    def sample() -> None:
        nonlocal peak
        peak = max(peak, rss_kib(pid))

    in_threads(bomb, bomb, bomb, bomb, meanwhile=sample)
    assert len(outcomes) == 4 and set(outcomes) <= {"431", "closed"}, outcomes
    print(f"header bomb: router RSS idle {idle} KiB, peak {peak} KiB (+{peak - idle} KiB); {outcomes}")
    assert peak - idle < 8 * 1024, (idle, peak)
    assert httpx.get(edge.served.url + "/healthz").status_code == 200


# -- read deadlines --------------------------------------------------------------------------------


def trickle(port: int, head: bytes, drip: bytes, every: float, within: float) -> Answer:
    """Send `head` at once, then `drip` a byte every `every` seconds until the router answers
    or closes; fails if it has not by `within`."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(head)
        for byte in drip:
            if readable(sock, every) or time.monotonic() - started > within:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        raw = read_to_end(sock, started + within)
        return parse(raw, time.monotonic() - started)


def test_slowloris_head_and_body_are_closed_at_their_deadlines(edge: Edge) -> None:
    results: dict[str, Answer] = {}

    def slow_head() -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: r\r\nX-Slow: "
        results["head"] = trickle(edge.port, head[:1], head[1:] + b"x" * 60, every=1.0, within=6)

    def slow_body() -> None:
        head = CHAT + b"Content-Length: 1000\r\n\r\n"
        results["body"] = trickle(edge.port, head, b" " * 1000, every=0.4, within=8)

    in_threads(slow_head, slow_body)
    head, body = results["head"], results["body"]
    print(f"slowloris: head closed after {head.elapsed:.2f}s, body after {body.elapsed:.2f}s")
    assert head.status == 408 and head.error()["code"] == "request_timeout"
    assert 0.9 <= head.elapsed < 2.5  # header_timeout: 1s
    assert body.status == 408 and body.error()["code"] == "request_timeout"
    assert 2.9 <= body.elapsed < 4.5  # body_timeout: 3s from the end of the head, though never idle 1s


def test_a_body_shorter_than_its_content_length_is_400_at_the_body_deadline(edge: Edge) -> None:
    body = b'{"model": "gpt-4o", "messages": []}'
    answer = exchange(edge.port, CHAT + b"Content-Length: %d\r\n\r\n" % (len(body) + 10) + body)
    print(f"lying Content-Length: answered after {answer.elapsed:.2f}s")
    assert answer.status == 400
    assert answer.error()["code"] == "invalid_request_error"
    assert "shorter than its Content-Length" in str(answer.error()["message"])
    assert 0.9 <= answer.elapsed < 2.5  # body_idle_timeout: 1s


def test_idle_connections_are_closed_while_the_router_keeps_serving(edge: Edge) -> None:
    closed_before = edge.metric('router_connections_closed_total{reason="header_timeout"}')
    kept_alive = 200  # of them answer one request first, then idle between requests
    sockets: list[socket.socket] = []
    watch = selectors.DefaultSelector()
    try:
        started = time.monotonic()
        for i in range(IDLE_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
            sockets.append(sock)
            watch.register(sock, selectors.EVENT_READ)
            if i < kept_alive:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
        opened = time.monotonic() - started
        open_now = len(sockets)
        while open_now and time.monotonic() - started < opened + 6:
            for key, _ in watch.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    watch.unregister(sock)
                    open_now -= 1
            assert httpx.get(edge.served.url + "/healthz", timeout=2).status_code == 200  # meanwhile
        took = time.monotonic() - started
        print(f"{IDLE_CONNECTIONS} idle connections: opened in {opened:.2f}s, all closed after {took:.2f}s")
        assert open_now == 0, f"{open_now} connections still open"
        assert took < opened + 3  # header_timeout and keepalive_timeout: 1s
    finally:
        watch.close()
        for sock in sockets:
            sock.close()
    closed = edge.metric('router_connections_closed_total{reason="header_timeout"}') - closed_before
    assert closed >= IDLE_CONNECTIONS - kept_alive
    assert edge.metric("router_connections_open") <= 2  # this scrape's, and maybe a /healthz one


# -- the connection cap and the metrics listener -------------------------------------------------


def test_a_connection_over_max_connections_gets_503_json_and_metrics_still_answer(tmp_path: Path) -> None:
    capped = start(tmp_path, "capped", "max_connections: 4, header_timeout: 5s")
    held: list[socket.socket] = []
    try:
        held = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(4)]
        deadline = time.monotonic() + 5
        while capped.metric("router_connections_open") < 5:  # the 4, and this scrape
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = exchange(capped.port, b"")  # refused before it says anything, and closed
        assert answer.status == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.error() == {
            "message": answer.error()["message"],
            "type": "api_error",
            "param": None,
            "code": "too_many_connections",
        }
        assert answer.elapsed < 1
        assert capped.metric('router_connections_closed_total{reason="max_connections"}') == 1
    finally:
        for sock in held:
            sock.close()
        stop(capped.served.process)


def test_metrics_are_on_their_own_port_and_404_on_the_main_one(edge: Edge) -> None:
    scraped = httpx.get(edge.metrics_url, timeout=5)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "router_connections_open " in scraped.text
    assert 'router_connections_closed_total{reason="bad_request"}' in scraped.text
    main = httpx.get(edge.served.url + "/metrics", timeout=5)
    assert main.status_code == 404
    assert main.json()["error"]["code"] == "not_found"
    other = httpx.get(edge.metrics_url.replace("/metrics", "/healthz"), timeout=5)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_workers_serve_the_edge_and_the_metrics_port_alike(tmp_path: Path, fresh_redis: RedisServer) -> None:
    """`--workers 2`: each worker serves both listeners with the same protocol and limits."""
    metrics_port = free_port()
    path = tmp_path / "workers.yaml"
    path.write_text(
        f"server: {{max_headers: 30, metrics_port: {metrics_port}}}\n"
        f'state: {{url: "{fresh_redis.url}"}}\n' + PROVIDERS
    )
    served = serve("--config", str(path), "--workers", "2")
    try:
        port = int(served.url.rsplit(":", 1)[1])
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(31))
        for _ in range(4):  # new connections spread over both workers
            assert exchange(port, b"GET /healthz HTTP/1.1\r\nHost: r\r\n" + many + b"\r\n").status == 431
            assert (
                exchange(port, MALFORMED["two equal Content-Lengths"]).error()["code"]
                == "invalid_request_error"
            )
        assert httpx.get(served.url + "/metrics").status_code == 404
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", headers={"Connection": "close"}).text
        found = re.search(r'^router_connections_closed_total\{reason="too_many_headers"\} (\S+)$', text, re.M)
        assert found and float(found.group(1)) == 4  # both workers' counts, merged
    finally:
        stop(served.process)
