"""Pure: an OpenAI Responses create body -> the Chat Completions body router sends upstream.

router is stateless: every request carries its whole conversation in `input`. What needs
state kept between requests (`previous_response_id`, `conversation`, a stored `prompt`,
`background`, `item_reference` items) is refused with a 400 naming the parameter.

`store`: `false` is what router does (nothing is stored). `true`, OpenAI's default that some
clients send explicitly, is accepted as well: nothing can later depend on the stored response,
since `previous_response_id` is refused, so serving it unstored breaks no one. The answer
says `"store": false`.

Fields router does not know are dropped, not refused (a newer SDK may send them), and no
Responses-only field goes upstream: the chat body is built from scratch, field by field.
"""

from __future__ import annotations

from typing import Any

from ...types import JSON
from ...validate import MAX_COMPLETION_TOKENS, REASONING_EFFORTS
from ..fields import fail, is_int
from .input import to_messages
from .tools import to_chat_tool_choice, to_chat_tools

STATEFUL = ("previous_response_id", "conversation", "prompt")
"""Parameters that refer to what OpenAI stored from earlier requests."""

LOGPROBS = "message.output_text.logprobs"
"""The `include` value that asks for the answer's token log probabilities."""

_SERVED_TIERS = ("auto", "default")
_TRUNCATIONS = ("auto", "disabled")
_VERBOSITIES = ("low", "medium", "high")


def to_chat(body: JSON) -> JSON:
    """Raises InvalidRequest naming the parameter for what the client got wrong or what
    router cannot serve."""
    for name in STATEFUL:
        if body.get(name) is not None:
            fail(
                name,
                f"'{name}' is not supported: router is stateless and stores no responses, "
                "conversations or prompts; send the whole conversation in `input`",
            )
    if _flag(body, "background"):
        fail("background", "'background' is not supported: router is stateless; stream the response instead")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        fail("model", "you must provide a model parameter" if model is None else "'model' must be a string")
    conversation = to_messages(body.get("input"))
    if not conversation:
        fail("input", "'input' must hold at least one message")
    chat: JSON = {"model": model, "messages": _instructions(body.get("instructions")) + conversation}
    _tools(body, chat)
    _text(body.get("text"), chat)
    _sampling(body, chat)
    _reasoning(body.get("reasoning"), chat)
    _logprobs(body, chat)
    _user(body, chat)
    _stream(body, chat)
    _accepted(body)
    return chat


def _instructions(instructions: Any) -> list[JSON]:
    if instructions is None:
        return []
    if not isinstance(instructions, str):
        fail("instructions", "'instructions' must be a string")
    return [{"role": "system", "content": instructions}] if instructions else []


def _tools(body: JSON, chat: JSON) -> None:
    tools = to_chat_tools(body["tools"]) if body.get("tools") is not None else []
    choice = body.get("tool_choice")
    if choice is not None:
        choice, tools = to_chat_tool_choice(choice, tools)
        if tools:
            chat["tool_choice"] = choice
        elif choice not in ("auto", "none"):  # (those two say nothing without tools)
            fail("tool_choice", "'tool_choice' asks for a tool call, and 'tools' offers none")
    if tools:
        chat["tools"] = tools
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            fail("parallel_tool_calls", "'parallel_tool_calls' must be a boolean")
        chat["parallel_tool_calls"] = parallel


def _text(text: Any, chat: JSON) -> None:
    """`text.format` -> `response_format`. `text.verbosity` is a length hint chat providers do
    not take; it is checked and not sent."""
    if text is None:
        return
    if not isinstance(text, dict):
        fail("text", "'text' must be an object")
    verbosity = text.get("verbosity")
    if verbosity is not None and verbosity not in _VERBOSITIES:
        fail("text.verbosity", f"'text.verbosity' must be one of: {', '.join(_VERBOSITIES)}")
    fmt = text.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        fail("text.format.type", "'text.format.type' must be one of: text, json_object, json_schema")
    assert isinstance(fmt, dict)
    name, schema = fmt.get("name"), fmt.get("schema")
    if not isinstance(name, str) or not name:
        fail("text.format.name", "'text.format.name' must be a non-empty string")
    if not isinstance(schema, dict):
        fail("text.format.schema", "'text.format.schema' must be an object (a JSON schema)")
    json_schema: JSON = {"name": name, "schema": schema}
    for key, kinds, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
        value = fmt.get(key)
        if value is None:
            continue
        if not isinstance(value, kinds):
            fail(f"text.format.{key}", f"'text.format.{key}' must be {what}")
        json_schema[key] = value
    chat["response_format"] = {"type": "json_schema", "json_schema": json_schema}


def _sampling(body: JSON, chat: JSON) -> None:
    for name, hi in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= hi:
            fail(name, f"'{name}' must be a number from 0 to {hi}")
        chat[name] = value
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not is_int(limit) or not 1 <= limit <= MAX_COMPLETION_TOKENS:
            fail(
                "max_output_tokens",
                f"'max_output_tokens' must be a whole number from 1 to {MAX_COMPLETION_TOKENS}",
            )
        chat["max_completion_tokens"] = limit


def _reasoning(reasoning: Any, chat: JSON) -> None:
    """`reasoning.effort` -> `reasoning_effort`. `reasoning.summary` asks OpenAI to summarize
    its hidden reasoning; chat providers show theirs whole or not at all, and what they show
    is answered as the reasoning item's summary (answer.py), so it needs nothing sent."""
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        fail("reasoning", "'reasoning' must be an object")
    effort = reasoning.get("effort")
    if effort is None:
        return
    if effort not in REASONING_EFFORTS:
        fail("reasoning.effort", f"'reasoning.effort' must be one of: {', '.join(REASONING_EFFORTS)}")
    chat["reasoning_effort"] = effort


def _logprobs(body: JSON, chat: JSON) -> None:
    """Log probabilities come back where `include` asks for them; `top_logprobs` says how many
    alternatives each token has."""
    include = body.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(isinstance(value, str) for value in include)
    ):
        fail("include", "'include' must be an array of strings")
    top = body.get("top_logprobs")
    if top is not None and (not is_int(top) or not 0 <= top <= 20):
        fail("top_logprobs", "'top_logprobs' must be a whole number from 0 to 20")
    if include is not None and LOGPROBS in include:
        chat["logprobs"] = True
        chat["top_logprobs"] = top or 0
    # The other `include` values ask for the outputs of built-in tools (refused in `tools`) or
    # for encrypted reasoning (there is none to give): nothing to honour, nothing to refuse.


def _user(body: JSON, chat: JSON) -> None:
    """`safety_identifier` is the newer name of `user`: one end-user id upstream either way."""
    for name in ("user", "safety_identifier"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            fail(name, f"'{name}' must be a string")
        chat.setdefault("user", value)


def _stream(body: JSON, chat: JSON) -> None:
    stream = body.get("stream")
    if stream is None:
        return
    if not isinstance(stream, bool):
        fail("stream", "'stream' must be a boolean")
    chat["stream"] = stream
    if stream:
        # The relay then ends the chat stream with its usage chunk: response.completed's usage.
        chat["stream_options"] = {"include_usage": True}


def _accepted(body: JSON) -> None:
    """Parameters checked and answered (echoed in the response) but not sent upstream.

    `truncation: auto` lets OpenAI drop the oldest input when it does not fit; router never
    cuts a conversation, so such an input gets the provider's context-length error instead,
    and one that fits is answered as OpenAI would. `stream_options.include_obfuscation` pads
    events against a side channel; router's events are not padded, which changes no answer.
    """
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        fail("store", "'store' must be a boolean")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        fail("metadata", "'metadata' must be an object of string values")
    truncation = body.get("truncation")
    if truncation is not None and truncation not in _TRUNCATIONS:
        fail("truncation", f"'truncation' must be one of: {', '.join(_TRUNCATIONS)}")
    tier = body.get("service_tier")
    if tier is not None and tier not in _SERVED_TIERS:
        fail(
            "service_tier",
            f"'service_tier' = {tier!r} cannot be honoured: router serves {' or '.join(_SERVED_TIERS)}",
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        fail("stream_options", "'stream_options' must be an object")


def _flag(body: JSON, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        fail(name, f"'{name}' must be a boolean")
    return value is True
