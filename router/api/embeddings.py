"""POST /v1/embeddings: OpenAI's embeddings create, checked here and answered in OpenAI's one shape.

Providers differ in the details of an embeddings answer (order of `data`, vectors as floats
or base64, usage with or without `total_tokens`); `answer` makes every one of them the shape
the openai SDK parses, in the encoding the client asked for.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from ..errors import UpstreamProtocolError
from ..types import JSON, Usage
from .endpoint import Answering, Endpoint
from .fields import fail, is_int

MAX_INPUTS = 2048
"""OpenAI's bound on the inputs of one request (strings or token arrays)."""
ENCODINGS = ("float", "base64")


def request(body: JSON) -> JSON:
    """The client's body, checked; unknown fields go to the provider untouched."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        fail("model", "you must provide a model parameter" if model is None else "'model' must be a string")
    _input(body.get("input"))
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        fail("encoding_format", f"'encoding_format' must be one of: {', '.join(ENCODINGS)}")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not is_int(dimensions) or dimensions < 1):
        fail("dimensions", "'dimensions' must be a whole number of at least 1")
    if body.get("user") is not None and not isinstance(body["user"], str):
        fail("user", "'user' must be a string")
    if body.get("stream"):
        fail("stream", "embeddings are not streamed")
    return body


def inputs(body: JSON) -> int:
    """How many embeddings a (checked) request asks for: one per string or token array."""
    value = body["input"]
    if isinstance(value, str) or not value or is_int(value[0]):
        return 1
    return len(value)


def _input(value: Any) -> None:
    if value is None:
        fail("input", "you must provide an input parameter")
    if isinstance(value, str):
        if not value:
            fail("input", "'input' cannot be an empty string")
        return
    if not isinstance(value, list) or not value:
        fail("input", "'input' must be a non-empty string or a non-empty array")
    if is_int(value[0]):  # one token array
        _tokens(value, "input")
        return
    if len(value) > MAX_INPUTS:
        fail("input", f"'input' takes at most {MAX_INPUTS} items, got {len(value)}")
    texts = isinstance(value[0], str)
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if texts:
            if not isinstance(item, str):
                fail(where, f"'{where}' must be a string, as the items before it")
            if not item:
                fail(where, f"'{where}' cannot be an empty string")
        elif isinstance(item, list) and item:
            _tokens(item, where)
        else:
            fail(where, f"'{where}' must be a string or a non-empty array of token ids")


def _tokens(tokens: list[Any], where: str) -> None:
    for j, token in enumerate(tokens):
        if not is_int(token) or token < 0:
            fail(f"{where}[{j}]", f"'{where}[{j}]' must be a token id (a whole number from 0)")


def answer(upstream: JSON, answering: Answering) -> JSON:
    """The provider's answer in OpenAI's shape: `data` in input order, each vector in the encoding
    the client asked for, `usage` with both counts. Raises UpstreamProtocolError (the provider's
    fault, never the client's) for an answer that does not hold one embedding per input."""
    wrong = fault(upstream, answering.request)
    if wrong is not None:
        raise UpstreamProtocolError(wrong, provider=None)
    encoding = answering.request.get("encoding_format") or "float"
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)}
        for index, vector in sorted(_vectors(upstream["data"]), key=lambda pair: pair[0])
    ]
    model = upstream.get("model")
    # What is settled: the provider's count, or router's estimate where it reported none.
    settled = answering.usage
    prompt = settled.prompt_tokens if settled is not None else _read_usage(upstream) or 0
    return {
        "object": "list",
        "data": data,
        "model": model if isinstance(model, str) and model else answering.request["model"],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def fault(upstream: JSON, request: JSON) -> str | None:
    """What is wrong with a provider's answer to `request`, if anything: an embedding per input,
    each index once, each vector a list or base64 string of the asked dimensions. Pure, so the
    attempt code can call it before the answer commits and fail over."""
    items = upstream.get("data")
    if not isinstance(items, list):
        return "embeddings answer has no data list"
    wanted = inputs(request)
    if len(items) != wanted:
        return f"embeddings answer has {len(items)} embeddings for {wanted} inputs"
    try:
        vectors = _vectors(items)
    except ValueError as exc:
        return str(exc)
    if sorted(index for index, _ in vectors) != list(range(wanted)):
        return "embeddings answer's indexes are not each input's once"
    dimensions = request.get("dimensions")
    for index, vector in vectors:
        size = len(vector) if isinstance(vector, list) else len(vector.rstrip("=")) * 3 // 4 // 4
        if dimensions is not None and size != dimensions:
            return f"embeddings answer's embedding {index} has {size} dimensions, {dimensions} asked"
    return None


def usage(upstream: JSON) -> Usage | None:
    """The settled usage of an embeddings answer: its prompt tokens (else its total), no completion.
    None when the provider reported neither."""
    prompt = _read_usage(upstream)
    return Usage(prompt, 0) if prompt is not None else None


def _vectors(items: list[Any]) -> list[tuple[int, list[Any] | str]]:
    """(index, vector) per item; an item without `index` is at its position."""
    out: list[tuple[int, list[Any] | str]] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"embeddings answer's data[{position}] is not an object")
        index = item.get("index", position)
        vector = item.get("embedding")
        if not is_int(index) or not isinstance(vector, list | str):
            raise ValueError(f"embeddings answer's data[{position}] has no index or embedding")
        out.append((index, vector))
    return out


def _encoded(vector: list[Any] | str, encoding: str) -> list[Any] | str:
    """The vector in `encoding`: base64 is float32 little-endian, what the openai SDK decodes."""
    try:
        if isinstance(vector, str):
            if encoding == "base64":
                return vector
            raw = base64.b64decode(vector, validate=True)
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if encoding == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    except (binascii.Error, struct.error) as exc:
        raise UpstreamProtocolError(
            f"embeddings answer has a malformed vector: {exc}", provider=None
        ) from None


def _read_usage(upstream: JSON) -> int | None:
    found = upstream.get("usage")
    if not isinstance(found, dict):
        return None
    for name in ("prompt_tokens", "total_tokens"):
        if is_int(found.get(name)) and found[name] >= 0:
            return int(found[name])
    return None


ENDPOINT = Endpoint(
    name="embeddings",
    kind="embedding",
    upstream_path="/embeddings",
    request=request,
    answer=answer,
    fault=fault,
    usage=usage,
)
