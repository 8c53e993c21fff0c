"""POST /v1/responses: the OpenAI Responses API, stateless, served by chat models.

The client's Responses body becomes a Chat Completions request (request.py); the chat answer
becomes a `response` object (answer.py), and the chat stream the Responses event stream
(stream.py). Both build the response object and its items alike (objects.py).
"""

from __future__ import annotations

from ..endpoint import Endpoint, checked_as_chat, naming_params, openai_error
from .answer import to_response
from .request import to_chat
from .stream import ResponseStream

CLIENT_PARAMS = {
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "max_completion_tokens": "max_output_tokens",
    "logprobs": "include",
}
"""The chat parameters request.py makes, by the Responses parameter they came from."""

ENDPOINT = Endpoint(
    name="responses",
    kind="chat",
    upstream_path="/chat/completions",
    request=checked_as_chat(to_chat),
    answer=to_response,
    stream=ResponseStream,
    error=naming_params(openai_error, CLIENT_PARAMS, messages="input"),
)

__all__ = ["ENDPOINT"]
