"""The bench's load generator reading the three APIs' streams (tests/bench/loadgen.py): what it
takes for the first text (time to first token) and for a stream's end, fed the bytes router's own
translations make, as an HTTP/1.1 chunked body arriving in pieces."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from router.api import ENDPOINTS, Answering
from tests.bench import loadgen
from tests.bench.loadgen import CHAT, MESSAGES, RESPONSES, Connection, StreamFormat

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
TEXTS = ["Hello", ", ", "world", "."]


def chat_events() -> list[bytes]:
    """A chat stream as the relay hands it on: role chunk, text, finish, usage, [DONE]."""

    def chunk(choices: list[Any], **extra: Any) -> bytes:
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
        return b"data: " + orjson.dumps({**body, "choices": choices, **extra}) + b"\n\n"

    events = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    events += [chunk([{"index": 0, "delta": {"content": t}, "finish_reason": None}]) for t in TEXTS]
    events.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(chunk([], usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}))
    return [*events, b"data: [DONE]\n\n"]


def pieces(api: str) -> list[bytes]:
    """What router sends, one `send` (one HTTP chunk) per chat event, in the API's shape."""
    events = chat_events()
    if api == "chat":
        return events
    request = {"model": "gpt-4o", "max_tokens": 64, "input": "Hi", "messages": [], "stream": True}
    translation = ENDPOINTS[api].stream(Answering(request, "0123abcd", 1))  # type: ignore[misc]
    return [out for out in (translation.events([e]) for e in events) if out]


def chunked(parts: list[bytes], *, last: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts)
    return HEAD + body + (b"0\r\n\r\n" if last else b"")


class Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def read(raw: bytes, form: StreamFormat, *, step: int = 0) -> tuple[Connection, bool]:
    """Feed `raw` to a connection (in `step`-byte reads, else at once); whether its answer completed."""

    async def go() -> tuple[Connection, bool]:
        conn = Connection(form)
        conn.connection_made(Transport())  # type: ignore[arg-type]
        waiter = conn.request(b"POST / HTTP/1.1\r\n\r\n")
        for at in range(0, len(raw), step or len(raw)):
            conn.data_received(raw[at : at + (step or len(raw))])
        return conn, waiter.done()

    return asyncio.run(go())


@pytest.mark.parametrize(("api", "form"), [("chat", CHAT), ("messages", MESSAGES), ("responses", RESPONSES)])
@pytest.mark.parametrize("step", [0, 7])
def test_each_text_piece_is_marked_once_and_the_end_is_seen(api: str, form: StreamFormat, step: int) -> None:
    conn, completed = read(chunked(pieces(api)), form, step=step)
    assert completed and conn.status == 200
    assert len(conn.marks) == len(TEXTS)  # the role chunk's empty content is no text
    assert conn.done_seen


@pytest.mark.parametrize(("api", "form"), [("messages", MESSAGES), ("responses", RESPONSES)])
def test_a_translated_stream_cut_before_its_end_event_is_not_whole(api: str, form: StreamFormat) -> None:
    sent = pieces(api)
    conn, completed = read(chunked(sent[:-1]), form)
    assert completed and not conn.done_seen
    assert len(conn.marks) == len(TEXTS)


def test_the_translated_streams_carry_no_done_and_chat_reading_finds_no_text_in_them() -> None:
    for api in ("messages", "responses"):
        conn, _ = read(chunked(pieces(api)), CHAT)
        assert not conn.done_seen, api  # no [DONE]: only the API's own end event ends it
    conn, _ = read(chunked(pieces("responses")), CHAT)
    assert conn.marks == []


def test_text_that_comes_with_the_end_counts_for_both() -> None:
    events = pieces("messages")
    conn, _ = read(chunked([*events[:-2], events[-2] + events[-1]]), MESSAGES)
    assert conn.done_seen and len(conn.marks) == len(TEXTS)


def test_a_whole_answer_by_content_length_completes() -> None:
    body = b'{"object":"list","data":[]}'
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    conn, completed = read(raw, CHAT, step=5)
    assert completed and conn.status == 200 and conn.marks == []


def test_the_formats_by_api_name() -> None:
    assert loadgen.FORMATS == {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES}
    assert len({f.missing for f in loadgen.FORMATS.values()}) == 3
