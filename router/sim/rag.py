"""Pure: what a simulated provider answers an embeddings or rerank request it accepts.

Answers depend only on the request, so tests can predict them:
  - an embedding is `dimensions` floats (DEFAULT_DIMENSIONS when the request names none) drawn
    from sha256 of the input, L2-normalised. The raw values do not depend on `dimensions`, so
    a shorter vector is the longer one cut and normalised again, as OpenAI's `dimensions` are;
  - `encoding_format: base64` sends the float32 little-endian bytes in base64, which is what
    the openai SDK decodes;
  - a rerank score is the share of the query's words a document contains, in [0, 1], so the
    document sharing most words with the query ranks first (ties: the earlier document);
  - usage counts tokens as the chat answers do (tokens.py); a token array is its length.
The 400s live in checks.py.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

from .tokens import count

DEFAULT_DIMENSIONS = 256
"""Small enough for fast tests and demos; a request's `dimensions` overrides it."""

_WORD = re.compile(r"\w+")


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI embeddings answer to a request checks.check_embeddings accepted."""
    items = _inputs(body["input"])
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        floats = vector(item, dimensions)
        data.append(
            {"object": "embedding", "index": index, "embedding": encode(floats) if as_base64 else floats}
        )
    prompt = sum(count(item) if isinstance(item, str) else len(item) for item in items)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """The embedding of one input: a text, or a token array (which embeds unlike any text)."""
    seed = ("text:" + item if isinstance(item, str) else "tokens:" + ",".join(map(str, item))).encode()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw.extend(n / 2**31 - 1.0 for n in struct.unpack("<8I", digest))
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def encode(floats: list[float]) -> str:
    """OpenAI's base64 encoding of a vector: float32, little-endian."""
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")


def decode(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def rerank(body: dict[str, Any]) -> dict[str, Any]:
    """The rerank answer (Jina's shape, as the aggregators relay it) to a request
    checks.check_rerank accepted."""
    query, documents = body["query"], body["documents"]
    ranked = sorted(
        ((index, score(query, document)) for index, document in enumerate(documents)),
        key=lambda pair: (-pair[1], pair[0]),
    )
    if body.get("top_n") is not None:
        ranked = ranked[: body["top_n"]]
    results = []
    for index, relevance in ranked:
        result: dict[str, Any] = {"index": index, "relevance_score": relevance}
        if body.get("return_documents") is True:
            result["document"] = {"text": documents[index]}
        results.append(result)
    prompt = count(query) + sum(count(document) for document in documents)
    return {
        "model": body["model"],
        "results": results,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def score(query: str, document: str) -> float:
    """The share of the query's distinct words (case-folded) the document contains."""
    wanted = words(query)
    return len(wanted & words(document)) / len(wanted) if wanted else 0.0


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold()))


def _inputs(value: str | list[Any]) -> list[Any]:
    """One item per embedding (a string or a token array), from a string, a token array, or a
    list of either."""
    if isinstance(value, str) or isinstance(value[0], int):
        return [value]
    return value
