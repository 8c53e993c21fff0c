"""router's HTTP/1.1 client against real sockets: framing, keep-alive, failures, flow control."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from router import http1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHAT = b"/v1/chat/completions"


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw TCP server on 127.0.0.1; yields its origin and a list of connection numbers served."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        _, body = await read_request(reader)
        writer.write(answer(b"echo:" + body, b"content-type: application/json"))
        await writer.drain()


async def test_a_request_reaches_the_path_with_its_headers_and_body() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.append(head + body)
        writer.write(answer(b"{}", b"Content-Type: application/json", b"X-Multi: a", b"X-Multi: b"))
        await writer.drain()

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [(b"authorization", b"Bearer k")], b'{"a":1}')
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-multi"] == "a, b"
        assert await response.read() == b"{}"
        response.close()
        await pool.aclose()
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nauthorization: Bearer k\r\n" in seen[0]
    assert seen[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')


async def test_connections_are_kept_alive_and_reused_once_read_to_the_end() -> None:
    async with server(echo_forever) as (url, connections):
        pool = http1.Pool(url, connect_timeout=2)
        for i in range(5):
            response = await pool.request(b"POST", CHAT, [], b"%d" % i)
            assert await response.read() == b"echo:%d" % i
            response.close()
        assert len(connections) == 1
        # Concurrent requests each need a connection of their own; afterwards all are pooled.
        responses = await asyncio.gather(*(pool.request(b"POST", CHAT, [], b"x") for _ in range(3)))
        for response in responses:
            assert await response.read() == b"echo:x"
            response.close()
        assert len(connections) == 3
        await pool.aclose()


async def test_an_answer_not_read_to_its_end_closes_its_connection() -> None:
    async with server(echo_forever) as (url, connections):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"abandoned")
        response.close()  # body never read
        response = await pool.request(b"POST", CHAT, [], b"next")
        assert await response.read() == b"echo:next"
        response.close()
        assert len(connections) == 2
        await pool.aclose()


async def test_chunked_pieces_arrive_as_they_are_sent() -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata:1\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # the connection stays open for the next one

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        chunks = response.chunks()
        assert await asyncio.wait_for(anext(chunks), 2) == b"data:1"  # before the rest was sent
        go_on.set()
        assert await asyncio.wait_for(anext(chunks), 2) == b"data:2"
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
        response.close()
        await pool.aclose()


async def test_an_answer_without_length_ends_with_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        assert await response.read() == b"all of it"
        response.close()
        await pool.aclose()


async def test_a_gzip_answer_is_decompressed() -> None:
    body = b'{"choices":[]}' * 100

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(body), b"content-encoding: gzip"))
        await writer.drain()

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        assert await response.read() == body
        response.close()
        await pool.aclose()


@pytest.mark.parametrize(
    ("sent", "error", "message"),
    [
        (b"", http1.ConnectionLost, "closed the connection before answering"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", http1.ConnectionLost, "mid-answer"),
        (b"NOT HTTP AT ALL\r\n\r\n", http1.ProtocolViolation, "broke the HTTP protocol"),
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 1\r\n\r\nx", http1.ProtocolViolation,
         "unsupported content-encoding"),
    ],
)  # fmt: skip
async def test_broken_answers_raise_what_happened(sent: bytes, error: type[Exception], message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(sent)
        await writer.drain()

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        with pytest.raises(error, match=message):
            response = await pool.request(b"POST", CHAT, [], b"")
            await response.read()
        await pool.aclose()


async def test_connect_failures_are_told_apart() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(http1.ConnectFailed, match="could not connect"):
        await http1.Pool(f"http://127.0.0.1:{port}", connect_timeout=2).request(b"POST", b"/x", [], b"")
    # 192.0.2.0/24 is TEST-NET: never routed, so the connect can only time out (or be refused
    # at once by a machine without a route; either way it is a connect failure, never a hang).
    with pytest.raises(http1.ConnectFailed):
        pool = http1.Pool("http://192.0.2.1:9", connect_timeout=0.2)
        await asyncio.wait_for(pool.request(b"POST", b"/x", [], b""), 5)


async def test_a_connection_the_server_dropped_while_idle_is_not_reused() -> None:
    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"ok"))  # claims keep-alive, then drops the connection
        await writer.drain()

    async with server(one_answer_then_close) as (url, connections):
        pool = http1.Pool(url, connect_timeout=2)
        for _ in range(3):
            response = await pool.request(b"POST", CHAT, [], b"")
            assert await response.read() == b"ok"
            response.close()
            await asyncio.sleep(0.05)  # the close reaches the client while the connection idles
        assert len(connections) == 3
        await pool.aclose()


async def test_cancelling_mid_answer_never_returns_the_connection_to_the_pool() -> None:
    async def slow_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"slow":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
            await writer.drain()
            await asyncio.sleep(10)
            return
        writer.write(answer(b"echo:" + body))
        await echo_forever(reader, writer)

    async with server(slow_then_echo) as (url, connections):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"slow")
        chunks = response.chunks()
        assert await anext(chunks) == b"a"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(chunks), 0.1)
        response.close()
        response = await pool.request(b"POST", CHAT, [], b"fresh")
        assert await response.read() == b"echo:fresh"
        response.close()
        assert len(connections) == 2
        await pool.aclose()


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_everything() -> None:
    piece = b"x" * 65536
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(piece) * 200))
        for _ in range(200):
            writer.write(piece)
            await writer.drain()  # blocks once the client stops reading
            sent += 1

    async with server(flood) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        chunks = response.chunks()
        await anext(chunks)
        await asyncio.sleep(0.5)  # the reader stalls: the server must stall too
        assert sent < 100, f"{sent} of 200 pieces were sent to a reader that stopped"
        total = sum([len(c) async for c in chunks])
        assert total > len(piece) * 150
        response.close()
        await pool.aclose()


async def test_a_body_without_length_cut_by_a_reset_is_an_error_not_an_answer() -> None:
    import socket
    import struct

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"partial":')
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with linger 0: a reset, not a clean end

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        with pytest.raises(http1.ConnectionLost):
            await response.read()
        await pool.aclose()


async def test_a_stream_read_to_its_done_gets_its_connection_pooled_when_the_end_follows() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # the terminator comes in a write of its own, later
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with server(handler) as (url, connections):
        pool = http1.Pool(url, connect_timeout=2)
        for _ in range(3):
            response = await pool.request(b"POST", CHAT, [], b"")
            assert await response.next_chunk() == b"data: [DONE]\n\n"
            response.release()  # before the terminator has arrived
            await asyncio.sleep(0.1)
        assert len(connections) == 1
        await pool.aclose()


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
         "broke the HTTP protocol"),
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 12\r\n\r\n"
         + gzip.compress(b"x" * 99, mtime=0)[:12], "cut short"),  # mtime: the same id on every worker
    ],
)  # fmt: skip
async def test_answers_that_cannot_be_relayed_are_refused(sent: bytes, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(sent)
        await writer.drain()
        await asyncio.sleep(0.5)

    async with server(handler) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        with pytest.raises(http1.HTTPError, match=message):
            response = await pool.request(b"POST", CHAT, [], b"")
            await response.read()
        await pool.aclose()


async def test_closing_the_pool_wakes_a_reader_mid_answer() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    async with server(slow) as (url, _):
        pool = http1.Pool(url, connect_timeout=2)
        response = await pool.request(b"POST", CHAT, [], b"")
        assert await response.next_chunk() == b"a"
        waiting = asyncio.ensure_future(response.next_chunk())
        await asyncio.sleep(0.05)
        await pool.aclose()  # a reload retiring a runtime, or shutdown
        with pytest.raises(http1.ConnectionLost):
            await asyncio.wait_for(waiting, 2)


async def test_one_pool_serves_its_origin_and_each_request_names_its_target() -> None:
    lines: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            lines.append(head.split(b"\r\n")[0])
            writer.write(answer(b"{}"))
            await writer.drain()

    async with server(handler) as (origin, connections):
        pool = http1.Pool(origin, connect_timeout=2)
        for method, target in [(b"POST", CHAT), (b"POST", b"/v1/embeddings?x=1"), (b"GET", b"/v1/models")]:
            response = await pool.request(method, target, [], b"")
            await response.read()
            response.close()
        await pool.aclose()
    assert lines == [
        b"POST /v1/chat/completions HTTP/1.1",
        b"POST /v1/embeddings?x=1 HTTP/1.1",
        b"GET /v1/models HTTP/1.1",
    ]
    assert len(connections) == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1", "http://127.0.0.1:1?q=1", "ftp://host", "http://"])
def test_a_pool_is_for_an_origin_only(url: str) -> None:
    with pytest.raises(ValueError):
        http1.Pool(url, connect_timeout=1)
