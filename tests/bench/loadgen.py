"""A small HTTP/1.1 keep-alive load generator over raw asyncio protocols.

Fast enough not to be the bottleneck against a Python server on one core, and able to
time what tools like wrk cannot: the first content of a stream (time to first token) and,
per stream, the gap between consecutive content chunks as the client sees them.

Cheap by design, because at 1,000 streams it parses ~50,000 chunks a second: one clock
read per socket read, chunk boundaries found with bytearray.find, no per-chunk objects.
Gaps are computed from the recorded times after the run, outside the measured loop.

Streams come in three APIs' shapes (StreamFormat): Chat Completions (`data:` chunks, ending
with `[DONE]`), Anthropic Messages (`event: content_block_delta` ... `event: message_stop`) and
OpenAI Responses (`event: response.output_text.delta` ... `event: response.completed`, no
`[DONE]`). Each is read the same way: a marker found in a piece says "answer text came", another
says "the stream ended whole", so time to first token is the same moment in all three.

Every run is bounded: requests still unanswered `grace` seconds after the window ends are
counted as timeouts (errors) and their connections closed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StreamFormat:
    """How a stream of one API shows answer text and its end, as bytes to search for."""

    content: bytes
    """Found in a piece that carries answer text. The byte after it must not be `"`: chat's role
    chunk carries `"content":""`, which is no text yet (an `event:` line is followed by a newline)."""
    end: bytes
    """Found in the piece that ends a whole stream; a stream without it is an error."""
    missing: str
    """The error kind of a stream that ended without `end`."""


CHAT = StreamFormat(b'"content":"', b"[DONE]", "no [DONE]")
MESSAGES = StreamFormat(b"event: content_block_delta\n", b"event: message_stop\n", "no message_stop")
RESPONSES = StreamFormat(
    b"event: response.output_text.delta\n", b"event: response.completed\n", "no response.completed"
)
FORMATS = {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES}
"""By API name, as scenarios name them."""


class Connection(asyncio.Protocol):
    def __init__(self, form: StreamFormat = CHAT) -> None:
        self.form = form
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.marks: list[float] = []
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.headers_done = False
        self.done_seen = False
        self.ended = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, raw: bytes) -> asyncio.Future[int]:
        self.waiter = asyncio.get_running_loop().create_future()
        self._reset()
        self.marks = []
        assert self.transport is not None
        self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._parse(time.perf_counter())

    def _parse(self, now: float) -> None:
        buf = self.buf
        if not self.headers_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.status = int(head[9:12])
            self.headers_done = True
            at = head.find(b"content-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                self.length = int(head[at + 15 : stop if stop > 0 else None])
            else:
                self.chunked = b"transfer-encoding: chunked" in head
        if self.length is not None:
            if len(buf) >= self.length:
                del buf[: self.length]
                self._finish(now)
            return
        while self.chunked:
            line = buf.find(b"\r\n")
            if line < 0:
                return
            size = int(buf[:line], 16)
            start, stop = line + 2, line + 2 + size
            if len(buf) < stop + 2:
                return
            if _has_content(buf, start, stop, self.form.content):
                self.marks.append(now)
            if buf.find(self.form.end, start, stop) >= 0:  # (the last text may come with the end)
                self.done_seen = True
            del buf[: stop + 2]
            if size == 0:
                self._finish(now)
                return

    def _finish(self, now: float) -> None:
        self.ended = now
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)


def _has_content(buf: bytearray, start: int, stop: int, marker: bytes = CHAT.content) -> bool:
    """Does this piece of a stream carry answer text (not just the role chunk's empty content)?"""
    size = len(marker)
    at = buf.find(marker, start, stop)
    while at >= 0:
        if at + size >= stop or buf[at + size] != 0x22:  # '"': an empty string
            return True
        at = buf.find(marker, at + size, stop)
    return False


@dataclass
class Result:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    streams: list[list[float]] = field(default_factory=list)
    """Per measured stream, the times its content chunks arrived."""
    errors: int = 0
    """Non-200 answers, lost connections, streams without their end ([DONE]) and timeouts (in the window)."""
    kinds: dict[str, int] = field(default_factory=dict)
    """errors by kind: "429", "lost", "no [DONE]" (StreamFormat.missing), "timeout", "connect"."""
    timeouts: int = 0
    total: int = 0
    """Every answer, warm-up included: what the server did during the whole run."""
    wall: float = 0.0
    cpu: float = 0.0
    """The load generator's own CPU seconds during the run (process_time)."""

    def error(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def p(self, q: float, *, ttft: bool = False) -> float:
        return percentile(self.ttfts if ttft else self.latencies, q) * 1000

    def gaps(self) -> list[float]:
        """Every gap between consecutive content chunks of every measured stream, in seconds."""
        out: list[float] = []
        for marks in self.streams:
            out.extend(b - a for a, b in itertools.pairwise(marks))
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request_bytes(host: str, path: str, body: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\n" + headers +
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


async def run(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    ramp: float = 0.0,
    grace: float = 30.0,
    stream: bool = False,
    headers: bytes = b"",
    form: StreamFormat = CHAT,
) -> Result:
    """Keep `concurrency` connections busy for warmup + seconds; measure requests started in the last
    `seconds`. Connection i starts i/concurrency * ramp seconds late, so long streams do not march in step.
    """
    raw = request_bytes(host, path, body, headers)
    loop = asyncio.get_running_loop()
    result = Result(seconds)
    begin = time.perf_counter()
    cpu_begin = time.process_time()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds
    conns: list[Connection | None] = [None] * concurrency

    async def connect(i: int) -> Connection | None:
        while time.perf_counter() < stop_at:
            try:
                _, conn = await loop.create_connection(lambda: Connection(form), host, port)
                conns[i] = conn
                return conn
            except OSError:
                result.error("connect")
                await asyncio.sleep(0.05)
        return None

    async def worker(i: int) -> None:
        if ramp:
            await asyncio.sleep(ramp * i / concurrency)
        conn = await connect(i)
        while conn is not None and (started := time.perf_counter()) < stop_at:
            measured = started >= measure_from
            try:
                status = await conn.request(raw)
            except ConnectionError:
                if measured:
                    result.error("lost")
                conn = await connect(i)
                continue
            result.total += 1
            if not measured:
                continue
            if status != 200 or (stream and not conn.done_seen):
                result.error(str(status) if status != 200 else form.missing)
                continue
            result.latencies.append(conn.ended - started)
            if conn.marks:
                result.ttfts.append(conn.marks[0] - started)
                result.streams.append(conn.marks)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    tasks = [loop.create_task(worker(i)) for i in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=stop_at + grace - time.perf_counter())
    for task in pending:  # still waiting on an answer long after the window: a timeout
        result.timeouts += 1
        result.error("timeout")
        task.cancel()
    for conn in conns:
        if conn is not None and conn.transport is not None:
            conn.transport.close()
    if pending:
        await asyncio.wait(pending, timeout=5)
    result.wall = time.perf_counter() - begin
    result.cpu = time.process_time() - cpu_begin
    return result
