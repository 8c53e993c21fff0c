"""envelope.complete: a whole answer leaves router with the whole OpenAI envelope. Pure."""

from __future__ import annotations

from typing import Any

from router import envelope

OPTIONS: Any = {"answer_id": "chatcmpl-own", "model": "up-model", "created": 77, "prompt_tokens": 11}


def answer(**fields: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "x" * 10}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], **fields}


def test_a_whole_answer_is_left_as_the_provider_sent_it() -> None:
    usage = {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    whole = answer(
        id="a", object="chat.completion", created=5, model="m", usage=usage, system_fingerprint="fp"
    )
    copy = dict(whole)
    assert envelope.complete(whole, **OPTIONS) is False
    assert whole == copy


def test_what_a_provider_leaves_out_is_filled_in() -> None:
    partial = answer(id="a", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert envelope.complete(partial, **OPTIONS) is True
    assert (partial["id"], partial["object"], partial["created"], partial["model"]) == (
        "a",
        "chat.completion",
        77,
        "up-model",
    )
    nulls = answer(id=None, object=None, created=None, model=None, usage=None)
    envelope.complete(nulls, **OPTIONS)
    assert (nulls["id"], nulls["created"], nulls["model"]) == ("chatcmpl-own", 77, "up-model")


def test_missing_usage_is_router_estimate() -> None:
    calls = answer(id="a", object="chat.completion", created=5, model="m")
    calls["choices"][0]["message"]["tool_calls"] = [{"function": {"name": "f", "arguments": "y" * 6}}]
    envelope.complete(calls, **OPTIONS)
    assert calls["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}  # 16 chars / 4
