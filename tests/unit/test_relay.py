from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.errors import UpstreamConnectionLost, UpstreamProtocolError, UpstreamStatusError
from router.relay import StreamRelay
from router.types import Usage

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m-1"}


def event(**chunk: Any) -> bytes:
    """A chunk with the whole OpenAI envelope, as a provider that sends it all would."""
    return b"data: " + orjson.dumps({**ENVELOPE, **chunk}) + b"\n\n"


def bare_event(**chunk: Any) -> bytes:
    """A chunk without `model` and `created`, as real200's document shows them."""
    return (
        b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", **chunk}) + b"\n\n"
    )


def chunks(out: bytes) -> list[Any]:
    return [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]


ROLE = event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
HELLO = event(choices=[{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}])
WORLD = event(choices=[{"index": 0, "delta": {"content": " world"}, "finish_reason": None}])
FINISH = event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
USAGE = event(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
DONE = b"data: [DONE]\n\n"


def relay(wants_usage: bool = False, **options: Any) -> StreamRelay:
    return StreamRelay(provider="p", wants_usage=wants_usage, **options)


def test_role_chunks_are_held_until_content_commits_the_stream() -> None:
    r = relay()
    assert r.feed(ROLE) == b""
    assert not r.committed
    assert r.feed(HELLO) == ROLE + HELLO
    assert r.committed
    assert r.model == "m-1"
    assert r.feed(WORLD) == WORLD


def test_reasoning_and_tool_calls_commit_too() -> None:
    for delta in ({"reasoning_content": "hmm"}, {"tool_calls": [{"index": 0, "id": "c"}]}):
        r = relay()
        assert r.feed(event(choices=[{"index": 0, "delta": delta}])) != b""
        assert r.committed


def test_usage_chunk_is_read_and_hidden_unless_asked_for() -> None:
    r = relay()
    out = r.feed(ROLE + HELLO + FINISH + USAGE + DONE)
    assert out == ROLE + HELLO + FINISH + DONE
    assert r.usage == Usage(3, 2)
    assert r.done and r.finished
    r = relay(wants_usage=True)
    assert r.feed(ROLE + HELLO + FINISH + USAGE + DONE) == ROLE + HELLO + FINISH + USAGE + DONE
    assert r.usage == Usage(3, 2)


def test_usage_on_a_content_chunk_is_read_and_moved_to_the_usage_chunk() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    final = event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=usage)
    r = relay()
    out = r.feed(ROLE + HELLO + final + DONE)
    assert r.usage == Usage(1, 1)
    assert [c.get("usage") for c in chunks(out)] == [None, None, None]  # a client that did not ask: none
    r = relay(wants_usage=True)
    out = chunks(r.feed(ROLE + HELLO + final + DONE))
    assert "usage" not in out[-2] and out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-1]["choices"] == [] and out[-1]["usage"] == usage  # counted once, in the last chunk
    every = relay(wants_usage=True, keep_chunk_usage=True)  # stream_options.chunk_include_usage
    assert chunks(every.feed(ROLE + HELLO + final + DONE))[-1]["usage"] == usage


def test_a_client_that_asked_for_usage_gets_the_estimate_when_the_provider_sends_none() -> None:
    r = relay(wants_usage=True, prompt_tokens=7)
    out = chunks(r.feed(ROLE + HELLO + WORLD + FINISH + DONE))
    assert out[-1]["choices"] == [] and out[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 2,  # hello, world: a finish reason alone is no token
        "total_tokens": 9,
    }
    assert r.usage is None and r.estimate() == Usage(7, 2)  # what gets settled, marked estimated
    assert {c["id"] for c in out} == {"chatcmpl-1"} and out[-1]["model"] == "m-1"
    no_done = relay(wants_usage=True, prompt_tokens=7)  # ends by its finish reason: usage still comes
    no_done.feed(ROLE + HELLO + FINISH)
    tail = no_done.end()
    assert chunks(tail)[-1]["usage"]["total_tokens"] == 8 and tail.endswith(DONE)


def test_provider_usage_details_reach_the_client_unchanged() -> None:
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    r = relay(wants_usage=True)
    out = chunks(r.feed(ROLE + HELLO + FINISH + event(choices=[], usage=usage) + DONE))
    assert out[-1]["usage"] == usage
    assert sum(1 for c in out if c.get("usage")) == 1
    assert r.usage == Usage(9, 4, cached_tokens=5, reasoning_tokens=2)  # what gets settled


def test_usage_details_on_the_finishing_chunk_are_settled_as_from_the_usage_chunk() -> None:
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    finish = event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=usage)
    for wants_usage in (False, True):
        r = relay(wants_usage=wants_usage)
        out = chunks(r.feed(ROLE + HELLO + finish + DONE))
        assert r.usage == Usage(9, 4, cached_tokens=5, reasoning_tokens=2)
        assert [c["usage"] for c in out if c.get("usage")] == ([usage] if wants_usage else [])


def test_a_chunk_without_model_and_created_is_given_the_envelope() -> None:
    r = relay(wants_usage=True, upstream_model="gpt-4o-2024", created=1234, prompt_tokens=2)
    role = bare_event(choices=[{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
    hello = bare_event(choices=[{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}])
    finish = bare_event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    out = chunks(r.feed(role + hello + finish + DONE))
    assert len(out) == 4
    for chunk in out:
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-1",
            "chat.completion.chunk",
            1234,
            "gpt-4o-2024",
        )
    assert out[1]["choices"][0]["delta"]["content"] == "Hello"


def test_a_null_model_is_replaced_and_a_missing_id_made() -> None:
    r = relay(upstream_model="up", answer_id="chatcmpl-own", created=5)
    first = b'data: {"model":null,"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    (chunk,) = chunks(r.feed(first))
    assert (chunk["id"], chunk["model"], chunk["created"], chunk["object"]) == (
        "chatcmpl-own",
        "up",
        5,
        "chat.completion.chunk",
    )


def test_a_stream_without_done_is_finalised_when_the_answer_finished() -> None:
    r = relay()
    r.feed(ROLE + HELLO + FINISH)
    assert r.end() == DONE


def test_a_stream_that_ends_mid_answer_is_an_error_not_a_success() -> None:
    r = relay()
    r.feed(ROLE + HELLO)
    with pytest.raises(UpstreamConnectionLost):
        r.end()


def test_a_stream_that_ends_before_any_answer_can_be_retried() -> None:
    r = relay()
    r.feed(ROLE)
    with pytest.raises(UpstreamProtocolError) as caught:
        r.end()
    assert caught.value.retryable
    early = relay()
    early.feed(ROLE + DONE)
    assert isinstance(early.failure, UpstreamProtocolError)


def test_an_error_event_fails_the_stream_after_what_came_before_it() -> None:
    r = relay()
    out = r.feed(
        ROLE + HELLO + WORLD + b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    )
    assert out == ROLE + HELLO + WORLD  # the client gets these, then the error
    assert isinstance(r.failure, UpstreamStatusError) and r.failure.retryable
    assert r.failure.message == "p: overloaded"


def test_an_error_event_is_read_like_an_http_error_answer() -> None:
    r = relay()
    r.feed(ROLE + b'data: {"error": {"message": "blocked: policy", "code": "content_filter"}}\n\n')
    assert isinstance(r.failure, UpstreamStatusError)
    assert (r.failure.http_status, r.failure.retryable, r.failure.message) == (400, False, "blocked: policy")
    bare = relay()
    bare.feed(ROLE + HELLO + b"event: error\ndata: \n\n")
    assert bare.failure is not None and bare.failure.message == "p: error in the stream"


def test_malformed_events_are_dropped_and_counted_and_the_stream_goes_on() -> None:
    r = relay()
    assert r.feed(b'data: {"choices":[{"delta":{"content":"he\n\n') == b""  # before the commit point
    assert r.failure is None and r.dropped == 1 and r.only_dropped
    assert r.feed(ROLE + HELLO) == ROLE + HELLO
    assert not r.only_dropped
    assert r.feed(b"data: keep-going\n\n") == b""  # not JSON at all
    assert r.feed(b'data: {"id":"x","object":"chat.completion.chunk","cho\n\n') == b""  # cut JSON
    assert r.feed(b'data: {"usage": {"prompt_tokens": 1,\n\n') == b""
    assert r.failure is None and r.dropped == 4 and r.only_dropped
    assert r.feed(WORLD + FINISH + DONE) == WORLD + FINISH + DONE


def test_comments_pass_after_commit_only_and_nothing_after_done() -> None:
    r = relay()
    assert r.feed(b": ping\n\n") == b""
    r.feed(ROLE + HELLO)
    assert r.feed(b": ping\n\n") == b": ping\n\n"
    assert r.feed(FINISH + DONE + WORLD) == FINISH + DONE
    assert r.end() == b""


def test_events_split_across_reads() -> None:
    r = relay()
    whole = ROLE + HELLO + FINISH + USAGE + DONE
    out = b"".join(r.feed(whole[i : i + 7]) for i in range(0, len(whole), 7))
    assert out == ROLE + HELLO + FINISH + DONE


def test_an_empty_finish_reason_is_not_a_finish() -> None:
    r = relay()
    r.feed(ROLE + event(choices=[{"index": 0, "delta": {"content": "one"}, "finish_reason": ""}]))
    r.feed(event(choices=[{"index": 0, "delta": {"content": "two"}, "finish_reason": ""}]))
    assert not r.finished
    with pytest.raises(UpstreamConnectionLost):
        r.end()


def test_with_n_choices_every_choice_must_finish() -> None:
    r = StreamRelay(provider="p", wants_usage=False, choices=2)
    first = event(choices=[{"index": 0, "delta": {"content": "a"}, "finish_reason": None}])
    r.feed(ROLE + first + event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    assert not r.finished  # choice 1 has not finished: one choice ending is not the end
    r.feed(event(choices=[{"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]))
    assert r.finished
    assert r.end() == DONE


def test_usage_is_pending_only_when_router_asked_for_it() -> None:
    asked = StreamRelay(provider="p", wants_usage=False, expects_usage=True)
    asked.feed(ROLE + HELLO + FINISH)
    assert asked.finished and asked.usage_pending
    asked.feed(USAGE)
    assert not asked.usage_pending
    assert not relay().usage_pending


def test_usage_sent_before_the_answer_still_comes_last() -> None:
    r = relay(wants_usage=True)
    out = chunks(r.feed(USAGE + ROLE + HELLO + FINISH + DONE))
    assert out[-1]["usage"]["total_tokens"] == 5 and out[-1]["choices"] == []
    assert all(c.get("usage") is None for c in out[:-1])
