"""POST /v1/rerank: the rerank shape Cohere, Jina and the OpenAI-compatible aggregators share.

Request: `model`, `query`, `documents` (strings or `{"text": ...}` objects), `top_n`,
`return_documents`; other fields (`max_chunks_per_doc` ...) go to the provider untouched.
Documents go upstream as plain strings, the shape every rerank service takes.

Answer: `results` best first (ties by index), at most `top_n`, each `{index, relevance_score}`
plus `document: {"text": ...}` exactly when the client asked `return_documents: true`. The
default is false, as Cohere's v2 API: a client that wants its documents back says so, and the
texts are the request's own (by index), whatever the provider echoed.
"""

from __future__ import annotations

from typing import Any

from ..errors import UpstreamProtocolError
from ..types import JSON, Usage
from .endpoint import Answering, Endpoint
from .fields import fail, is_int, is_number

MAX_DOCUMENTS = 1000


def request(body: JSON) -> JSON:
    """The body to send upstream: checked, documents as strings, everything else as the client sent it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        fail("model", "you must provide a model parameter" if model is None else "'model' must be a string")
    query = body.get("query")
    if not isinstance(query, str) or not query:
        fail("query", "'query' must be a non-empty string")
    texts = _documents(body.get("documents"))
    top_n = body.get("top_n")
    if top_n is not None and (not is_int(top_n) or top_n < 1):
        fail("top_n", "'top_n' must be a whole number of at least 1")
    flag = body.get("return_documents")
    if flag is not None and not isinstance(flag, bool):
        fail("return_documents", "'return_documents' must be a boolean")
    if body.get("stream"):
        fail("stream", "rerank answers are not streamed")
    return {**body, "documents": texts}


def texts(body: JSON) -> list[str]:
    """A checked request's documents as strings."""
    return [d if isinstance(d, str) else d["text"] for d in body["documents"]]


def _documents(documents: Any) -> list[str]:
    if not isinstance(documents, list) or not documents:
        fail("documents", "'documents' must be a non-empty array")
    if len(documents) > MAX_DOCUMENTS:
        fail("documents", f"'documents' takes at most {MAX_DOCUMENTS} items, got {len(documents)}")
    out = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            out.append(document)
        elif isinstance(document, dict) and document.keys() == {"text"} and isinstance(document["text"], str):
            out.append(document["text"])
        else:  # other fields could not reach a provider that takes strings: refused, not dropped
            fail(f"documents[{i}]", f"'documents[{i}]' must be a string or an object {{\"text\": string}}")
    return out


def answer(upstream: JSON, answering: Answering) -> JSON:
    """The provider's results in the one shape: best first, cut to `top_n`, documents when asked.
    Raises UpstreamProtocolError (the provider's fault) for results that do not fit the request."""
    request = answering.request
    documents = texts(request)
    wrong = fault(upstream, request)
    if wrong is not None:
        raise UpstreamProtocolError(wrong, provider=None)
    ranked = sorted(_scored(upstream["results"]), key=lambda pair: (-pair[1], pair[0]))
    top_n = request.get("top_n")
    if top_n is not None:
        ranked = ranked[:top_n]
    with_documents = request.get("return_documents") is True
    results = []
    for index, score in ranked:
        result: JSON = {"index": index, "relevance_score": score}
        if with_documents:
            result["document"] = {"text": documents[index]}
        results.append(result)
    model = upstream.get("model")
    settled = answering.usage  # the provider's count, or router's estimate where it reported none
    if settled is not None:
        counted: JSON = {"prompt_tokens": settled.prompt_tokens, "total_tokens": settled.prompt_tokens}
    else:
        prompt, total = _counts(upstream)
        counted = {} if prompt is None else {"prompt_tokens": prompt}
        counted["total_tokens"] = total if total is not None else prompt or 0
    return {
        "id": "rerank-" + answering.answer_id,
        "model": model if isinstance(model, str) and model else request["model"],
        "results": results,
        "usage": counted,
    }


def fault(upstream: JSON, request: JSON) -> str | None:
    """What is wrong with a provider's answer to `request`, if anything: each result a document of
    the request, once, with a numeric score. Pure, so the attempt code can fail over on it."""
    results = upstream.get("results")
    if not isinstance(results, list):
        return "rerank answer has no results list"
    try:
        scored = _scored(results)
    except ValueError as exc:
        return str(exc)
    indexes = [index for index, _ in scored]
    count = len(request["documents"])
    if any(not 0 <= index < count for index in indexes) or len(set(indexes)) != len(indexes):
        return f"rerank answer's indexes are not distinct documents of the {count} sent"
    return None


def usage(upstream: JSON) -> Usage | None:
    """The settled usage of a rerank answer: its input tokens, no completion; None when unreported.
    Rerank services report `usage.prompt_tokens` or `usage.total_tokens` (Jina, the aggregators)
    or Cohere's `meta.billed_units.input_tokens` (or `meta.tokens.input_tokens`)."""
    prompt, total = _counts(upstream)
    tokens = prompt if prompt is not None else total
    return Usage(tokens, 0) if tokens is not None else None


def _scored(results: list[Any]) -> list[tuple[int, float]]:
    out = []
    for position, result in enumerate(results):
        if not isinstance(result, dict):
            raise ValueError(f"rerank answer's results[{position}] is not an object")
        index = result.get("index")
        score = result.get("relevance_score", result.get("score"))
        if not is_int(index) or not is_number(score):
            raise ValueError(f"rerank answer's results[{position}] has no index or score")
        out.append((index, score))
    return out


def _counts(upstream: JSON) -> tuple[int | None, int | None]:
    """(prompt tokens, total tokens) as the provider reported them."""
    found = upstream.get("usage")
    found = found if isinstance(found, dict) else {}
    prompt, total = _count(found.get("prompt_tokens")), _count(found.get("total_tokens"))
    meta = upstream.get("meta")
    if prompt is None and isinstance(meta, dict):
        for name in ("billed_units", "tokens"):
            units = meta.get(name)
            if prompt is None and isinstance(units, dict):
                prompt = _count(units.get("input_tokens"))
    return prompt, total


def _count(value: Any) -> int | None:
    """A token count: Cohere's billed units may come as whole floats (8.0)."""
    whole = is_int(value) or (isinstance(value, float) and value.is_integer())
    return int(value) if whole and value >= 0 else None


ENDPOINT = Endpoint(
    name="rerank",
    kind="rerank",
    upstream_path="/rerank",
    request=request,
    answer=answer,
    fault=fault,
    usage=usage,
)
