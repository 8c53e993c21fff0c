"""POST /v1/messages (the Anthropic Messages API) and /v1/messages/count_tokens, served by chat
models: the request becomes a Chat Completions request (request.py, messages.py), the answer
an Anthropic message (answer.py) or event stream (stream.py), errors Anthropic's (errors.py).
Clients may send their router key as `x-api-key`, as the Anthropic SDKs do.
"""

from __future__ import annotations

from ...limits import estimate
from ...types import JSON
from ..endpoint import Endpoint, checked_as_chat, naming_params
from .answer import to_message
from .errors import render
from .request import to_chat
from .stream import MessageStream

CLIENT_PARAMS = {
    "max_completion_tokens": "max_tokens",
    "stop": "stop_sequences",
    "reasoning_effort": "thinking",
    "thinking_enabled": "thinking",
    "user": "metadata.user_id",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "response_format": "output_config.format",
}
"""The chat parameters request.py makes, by the Messages parameter they came from."""

ENDPOINT = Endpoint(
    name="messages",
    kind="chat",
    upstream_path="/chat/completions",
    request=checked_as_chat(to_chat),
    answer=to_message,
    stream=MessageStream,
    error=naming_params(render, CLIENT_PARAMS, messages="messages"),
    api_key_header=b"x-api-key",
    request_id_header=b"request-id",
)


def count_tokens(body: JSON, size: int) -> JSON:
    """`{"input_tokens": N}` for a Messages body of `size` bytes (max_tokens not needed).

    N is router's own estimate of the prompt, the one limits and budgets reserve when the same
    body is sent to /v1/messages (limits.estimate: its bytes / 3, capped). It is not the
    provider's tokenizer, which router does not have: a provider may count a few tokens more or
    fewer. Raises InvalidRequest as /v1/messages does.
    """
    chat = to_chat(body, require_max_tokens=False)
    return {"input_tokens": estimate(chat, size, answers=False).prompt_tokens}


__all__ = ["ENDPOINT", "count_tokens"]
