"""A small HTTP/1.1 keep-alive load generator over raw asyncio protocols.

Fast enough not to be the bottleneck against a Python server on one core, and able to
time the first content of a stream (time to first token), which tools like wrk cannot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

_CONTENT = b'"content":"'


def _has_content(chunk: bytearray) -> bool:
    """Does this piece of a stream carry answer text (not just the role chunk's empty content)?"""
    at = chunk.find(_CONTENT)
    while at >= 0:
        if chunk[at + 11 : at + 12] != b'"':
            return True
        at = chunk.find(_CONTENT, at + 11)
    return False


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, float | None, float]] | None = None
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.headers_done = False
        self.first: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, float | None, float]]:
        self.waiter = asyncio.get_running_loop().create_future()
        self._reset()
        assert self.transport is not None
        self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._parse()

    def _parse(self) -> None:
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
                self._finish()
            return
        while self.chunked:
            line = buf.find(b"\r\n")
            if line < 0:
                return
            size = int(buf[:line], 16)
            if len(buf) < line + 2 + size + 2:
                return
            if self.first is None and _has_content(buf[line + 2 : line + 2 + size]):
                self.first = time.perf_counter()
            del buf[: line + 2 + size + 2]
            if size == 0:
                self._finish()
                return

    def _finish(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, self.first, time.perf_counter()))


@dataclass
class Result:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def p(self, q: float, *, ttft: bool = False) -> float:
        values = sorted(self.ttfts if ttft else self.latencies)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def run(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    headers: bytes = b"",
) -> Result:
    """Keep `concurrency` connections busy for warmup + seconds; measure the last `seconds`."""
    raw = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\n" + headers +
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    result = Result(seconds)
    begin = time.perf_counter()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds

    async def worker() -> None:
        _, conn = await loop.create_connection(_Connection, host, port)
        while (started := time.perf_counter()) < stop_at:
            try:
                status, first, ended = await conn.request(raw)
            except ConnectionError:
                result.errors += 1
                _, conn = await loop.create_connection(_Connection, host, port)
                continue
            if started >= measure_from:
                if status != 200:
                    result.errors += 1
                result.latencies.append(ended - started)
                if first is not None:
                    result.ttfts.append(first - started)
        assert conn.transport is not None
        conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
