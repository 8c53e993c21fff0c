"""Pure: a whole `chat.completion` -> the OpenAI Responses `response` the client gets.

Its output, in the order a Responses model answers: the reasoning (when the provider shows
it), the message (text and refusal), then one `function_call` item per tool call.
"""

from __future__ import annotations

from typing import Any

from ...types import JSON
from ..endpoint import Answering
from .objects import (
    finish_status,
    function_call_item,
    item_id,
    message_item,
    output_logprobs,
    reasoning_item,
    refusal_part,
    response_object,
    text_part,
    usage_object,
)


def to_response(upstream: JSON, answering: Answering) -> JSON:
    choice = _first_choice(upstream)
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    status, incomplete = finish_status(choice.get("finish_reason"))
    items_status = "completed" if status == "completed" else "incomplete"
    answer_id = answering.answer_id
    output: list[JSON] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(item_id("rs", answer_id), reasoning, items_status))
    content: list[JSON] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        logprobs = choice.get("logprobs")
        tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
        content.append(text_part(text, output_logprobs(tokens)))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append(refusal_part(refusal))
    if content:
        output.append(message_item(item_id("msg", answer_id), content, items_status))
    calls = message.get("tool_calls")
    for n, call in enumerate(calls if isinstance(calls, list) else ()):
        output.append(_function_call(call, answer_id, n, items_status))
    model = upstream.get("model")
    return response_object(
        answering,
        model=model if isinstance(model, str) and model else answering.request["model"],
        status=status,
        output=output,
        usage=usage_object(upstream.get("usage")),
        incomplete_details=incomplete,
    )


def _first_choice(upstream: JSON) -> JSON:
    """The answer: router asks for one choice (Responses has no `n`)."""
    choices = upstream.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def _function_call(call: Any, answer_id: str, n: int, status: str) -> JSON:
    call = call if isinstance(call, dict) else {}
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    return function_call_item(
        item_id("fc", answer_id, n),
        # A provider that names no call gets an id of router's: the client answers with it.
        call_id if isinstance(call_id, str) and call_id else f"call_{answer_id}_{n}",
        name if isinstance(name, str) else "",
        arguments if isinstance(arguments, str) else "",
        status,
    )
