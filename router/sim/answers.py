"""Pure: the deterministic answer a simulated provider gives a request it accepts.

Answers depend only on the request and the simulator's settings, so tests can predict
them: the text names the dialect and model; a tool call is made when tools are offered
on a user turn (or tool_choice forces one), its arguments an instance of the tool's
parameters; structured output is valid against its schema; `stop` and max_tokens cut the
prose; usage counts the tokens returned (tokens.py). The 400s live in checks.py, the wire
shapes in wire.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from . import schema
from .dialects import Dialect
from .tokens import FILLER, count, group, logprobs, tokens

# Reasoning tokens trinity reports per reasoning_effort; thinking_enabled alone is "medium".
REASONING: Mapping[str, int] = MappingProxyType({"minimal": 8, "low": 16, "medium": 32, "high": 64})


@dataclass(frozen=True)
class Choice:
    pieces: tuple[str, ...]
    """The content as the stream sends it; empty for a tool call."""
    tool_call: dict[str, Any] | None
    finish_reason: str
    logprobs: tuple[tuple[dict[str, Any], ...], ...] | None = None
    """When asked for: per piece, the logprobs of its tokens."""

    @property
    def content(self) -> str | None:
        return "".join(self.pieces) if self.tool_call is None else None


@dataclass(frozen=True)
class Answer:
    choices: tuple[Choice, ...]
    usage: dict[str, Any]

    # The first choice's, for callers that ask for one choice.
    @property
    def pieces(self) -> tuple[str, ...]:
        return self.choices[0].pieces

    @property
    def tool_call(self) -> dict[str, Any] | None:
        return self.choices[0].tool_call

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def content(self) -> str | None:
        return self.choices[0].content


def answer(dialect: Dialect, body: dict[str, Any], *, chunks: int, call_id: str) -> Answer:
    made = [_choice(dialect, body, i, chunks=chunks, call_id=call_id) for i in range(choices(body))]
    completion = sum(spent for _, spent in made)
    return Answer(tuple(c for c, _ in made), _usage(dialect, body, completion))


def choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _choice(
    dialect: Dialect, body: dict[str, Any], index: int, *, chunks: int, call_id: str
) -> tuple[Choice, int]:
    """Choice `index` and the completion tokens it cost."""
    messages = body["messages"]
    last_role = messages[-1].get("role")
    choice = body.get("tool_choice")
    forced = choice == "required" or isinstance(choice, dict)
    if body.get("tools") and choice != "none" and (last_role == "user" or forced):
        name, parameters = _tool(body)
        text = "simulated" if index == 0 else f"simulated {index + 1}"  # n distinct choices
        arguments = orjson.dumps(schema.example(parameters, text=text, free_key="query")).decode()
        call = {
            "id": call_id if index == 0 else f"{call_id}_{index}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        no_pieces: tuple[tuple[dict[str, Any], ...], ...] = ()
        return Choice((), call, "tool_calls", no_pieces if body.get("logprobs") is True else None), count(
            arguments
        )
    words = _sentence(dialect, body, index).split()
    missing = max(0, chunks - len(words))  # filler words, cycled: --chunks 200 gives 200 chunks
    words += [FILLER[i % len(FILLER)] for i in range(missing)]
    words += ["more"] * index  # choice i is i tokens longer: choices finish at different times
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish = words[:limit], "length"
    text = " ".join(words)
    cut = _cut(text, _stops(body))
    if cut is not None:
        text, finish = cut, "stop"
    content = _formatted(body, text)
    # Prose and JSON alike: runs of tokens, as many runs as chunks (+ the choice's extra).
    runs = group(tokens(content), chunks + index)
    pieces = tuple("".join(run) for run in runs)
    lp: tuple[tuple[dict[str, Any], ...], ...] | None = None
    if body.get("logprobs") is True:
        entries = logprobs([t for run in runs for t in run], choice=index, top=_top(body))
        starts = [sum(len(r) for r in runs[:k]) for k in range(len(runs) + 1)]
        lp = tuple(tuple(entries[starts[k] : starts[k + 1]]) for k in range(len(runs)))
    return Choice(pieces, None, finish, lp), count(content)


def _sentence(dialect: Dialect, body: dict[str, Any], index: int) -> str:
    """The prose of choice `index`; the choices differ from their first word on, so even a
    stop sequence or max_tokens early in the text leaves n distinct choices."""
    messages = body["messages"]
    model = body["model"]
    if messages[-1].get("role") == "tool":
        seen = len(str(messages[-1].get("content") or ""))
        if index == 0:
            return f"The tool answered with {seen} characters."
        return f"#{index + 1} the tool answered with {seen} characters."
    if index == 0:
        return f"This is a simulated answer from {dialect.name} ({model})."
    return f"#{index + 1} is a simulated answer from {dialect.name} ({model})."


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    listed = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in listed if isinstance(s, str) and s]


def _cut(text: str, stops: list[str]) -> str | None:
    """`text` up to the first stop sequence, which is not returned; None if none occurs."""
    found = [text.find(s) for s in stops if s in text]
    return text[: min(found)] if found else None


def _formatted(body: dict[str, Any], text: str) -> str:
    """The content: the prose, or JSON carrying it. stop and max_tokens cut the prose before
    it is wrapped, so a structured answer always parses."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if kind == "json_object":
        return orjson.dumps({"answer": text}).decode()
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        given = spec.get("schema") if isinstance(spec, dict) else None
        target = given if isinstance(given, dict) else {"type": "object"}
        return orjson.dumps(schema.example(target, text=text, free_key="answer")).decode()
    return text


def _tool(body: dict[str, Any]) -> tuple[str, Any]:
    """The tool to call: the one tool_choice names, else the first; and its parameters."""
    functions = [t.get("function") for t in body["tools"] if isinstance(t, dict)]
    tools: list[dict[str, Any]] = [f for f in functions if isinstance(f, dict)]
    choice = body.get("tool_choice")
    named = choice.get("function") if isinstance(choice, dict) else None
    wanted = named.get("name") if isinstance(named, dict) else None
    for tool in tools:
        if not isinstance(wanted, str) or tool.get("name") == wanted:
            name = tool.get("name")
            return (name if isinstance(name, str) else "tool"), tool.get("parameters", {"type": "object"})
    return (wanted if isinstance(wanted, str) else "tool"), {"type": "object"}


def _top(body: dict[str, Any]) -> int:
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) else 0


def _prompt_tokens(messages: list[Any]) -> int:
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return math.ceil(chars / 4) + 3 * len(messages)


def _usage(dialect: Dialect, body: dict[str, Any], completion: int) -> dict[str, Any]:
    messages = body["messages"]
    prompt = _prompt_tokens(messages)
    reasoning = _reasoning(body) * choices(body) if dialect.usage_details else 0
    completion += reasoning  # as OpenAI counts them: reasoning is part of the completion
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if dialect.usage_details:
        # The conversation before the last message is what a prefix cache has seen.
        usage["prompt_tokens_details"] = {
            "cached_tokens": _prompt_tokens(messages[:-1]) if len(messages) > 1 else 0
        }
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _reasoning(body: dict[str, Any]) -> int:
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort != "none":
        return REASONING.get(effort, REASONING["medium"])
    return REASONING["medium"] if body.get("thinking_enabled") is True else 0
