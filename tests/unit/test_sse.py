from __future__ import annotations

import random

from router import sse

EVENTS = [
    b'data: {"a":1}\n\n',
    b": keep-alive\n\n",
    b'event: x\ndata: {"b":2}\ndata: more\n\n',
    b"data: [DONE]\n\n",
]
STREAM = b"".join(EVENTS)


def split_all(pieces: list[bytes]) -> list[bytes]:
    splitter = sse.EventSplitter()
    out = [e for piece in pieces for e in splitter.feed(piece)]
    last = splitter.flush()
    return out + ([last] if last else [])


def test_events_come_out_whole_however_the_bytes_are_cut() -> None:
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
        pieces = [STREAM[i:j] for i, j in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert split_all(pieces) == EVENTS


def test_byte_at_a_time() -> None:
    assert split_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS


def test_crlf_and_cr_line_endings_even_split_across_reads() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    for cut in range(1, len(crlf)):
        assert split_all([crlf[:cut], crlf[cut:]]) == EVENTS
    assert split_all([STREAM.replace(b"\n", b"\r")]) == EVENTS


def test_extra_blank_lines_make_no_empty_events() -> None:
    assert split_all([b'data: {"a":1}\n\n\n\ndata: [DONE]\n\n']) == [
        b'data: {"a":1}\n\n',
        b"data: [DONE]\n\n",
    ]


def test_an_unterminated_last_event_is_flushed_at_the_end() -> None:
    assert split_all([b"data: [DONE]"]) == [b"data: [DONE]\n\n"]
    assert split_all([b"data: [DONE]\n"]) == [b"data: [DONE]\n\n"]


def test_data_of() -> None:
    assert sse.data_of(b'data: {"a":1}\n\n') == b'{"a":1}'
    assert sse.data_of(b'data:{"a":1}\n\n') == b'{"a":1}'
    assert sse.data_of(b"event: x\ndata: one\ndata: two\n\n") == b"one\ntwo"
    assert sse.data_of(b": comment\n\n") is None
    assert sse.data_of(b"id: 3\n\n") is None


def test_peeks() -> None:
    assert sse.may_hold_usage(b'{"choices":[],"usage":{"prompt_tokens":1}}')
    assert sse.may_hold_usage(b'{"usage" : {"prompt_tokens":1}}')
    assert not sse.may_hold_usage(b'{"choices":[{"delta":{"content":"usage"}}],"usage":null}')
    assert not sse.may_hold_usage(b'{"choices":[{"delta":{"content":"\\"usage\\":{"}}]}')
    assert sse.may_finish(b'{"choices":[{"finish_reason":"stop"}]}')
    assert not sse.may_finish(b'{"choices":[{"finish_reason":null}]}')
    assert sse.is_error(b"", b'{"error": {"message": "x"}}')
    assert sse.is_error(b"event: error\ndata: x\n\n", b"x")
    assert not sse.is_error(b"", b'{"choices":[{"delta":{"content":"error"}}]}')
    assert sse.is_done(b"[DONE]") and sse.is_done(b" [DONE] ")
