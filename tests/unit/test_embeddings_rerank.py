"""The embeddings and rerank endpoints' pure translations: what they refuse, how they answer."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse

from router.api import embeddings, rerank
from router.api.endpoint import Answering
from router.errors import InvalidRequest, UpstreamProtocolError
from router.types import Usage

EMBED = "text-embedding-3-small"
RERANK = "bge-reranker-v2-m3"


def answering(request: dict[str, Any]) -> Answering:
    return Answering(request=request, answer_id="abc123", created=1_700_000_000)


def refused(request: Any, body: dict[str, Any]) -> str | None:
    with pytest.raises(InvalidRequest) as caught:
        request(body)
    return caught.value.param


def float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


# -- embeddings: requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ["x"] * 2048, list(range(5000))],
    ids=["text", "texts", "token-array", "token-arrays", "2048-texts", "one-long-token-array"],
)
def test_embeddings_takes_every_input_shape_openai_takes(value: Any) -> None:
    body = {"model": EMBED, "input": value, "encoding_format": "base64", "dimensions": 8, "user": "u"}
    assert embeddings.request(body) is body


def test_embeddings_passes_unknown_fields_to_the_provider() -> None:
    body = {"model": EMBED, "input": "hi", "input_type": "query", "truncate": "END"}
    assert embeddings.request(body) == {
        "model": EMBED,
        "input": "hi",
        "input_type": "query",
        "truncate": "END",
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": 4, "input": "hi"}, "model"),
        ({"model": EMBED}, "input"),
        ({"model": EMBED, "input": ""}, "input"),
        ({"model": EMBED, "input": []}, "input"),
        ({"model": EMBED, "input": {"text": "hi"}}, "input"),
        ({"model": EMBED, "input": ["a", "b", "", "d"]}, "input[2]"),
        ({"model": EMBED, "input": ["a", 1]}, "input[1]"),
        ({"model": EMBED, "input": ["a", ["b"]]}, "input[1]"),
        ({"model": EMBED, "input": [[1], []]}, "input[1]"),
        ({"model": EMBED, "input": [[1], "a"]}, "input[1]"),
        ({"model": EMBED, "input": [[1, 2], [3, "x"]]}, "input[1][1]"),
        ({"model": EMBED, "input": [5, -1]}, "input[1]"),
        ({"model": EMBED, "input": [5, True]}, "input[1]"),
        ({"model": EMBED, "input": ["x"] * 2049}, "input"),
        ({"model": EMBED, "input": "hi", "encoding_format": "hex"}, "encoding_format"),
        ({"model": EMBED, "input": "hi", "dimensions": 0}, "dimensions"),
        ({"model": EMBED, "input": "hi", "dimensions": True}, "dimensions"),
        ({"model": EMBED, "input": "hi", "dimensions": "8"}, "dimensions"),
        ({"model": EMBED, "input": "hi", "user": 7}, "user"),
        ({"model": EMBED, "input": "hi", "stream": True}, "stream"),
    ],
)
def test_embeddings_refuses_naming_the_param(body: dict[str, Any], param: str) -> None:
    assert refused(embeddings.request, body) == param


# -- embeddings: answers --------------------------------------------------------------------


def upstream(
    *vectors: Any, usage: Any = None, order: list[int] | None = None, **extra: Any
) -> dict[str, Any]:
    order = order if order is not None else list(range(len(vectors)))
    data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in order]
    found = {"object": "list", "data": data, "model": "text-embedding-3-small-v2", **extra}
    if usage is not None:
        found["usage"] = usage
    return found


def test_embeddings_answer_is_in_input_order_and_what_the_sdk_parses() -> None:
    request = {"model": EMBED, "input": ["a", "b", "c"]}
    found = upstream([0.1], [0.2], [0.3], usage={"prompt_tokens": 3}, order=[2, 0, 1], id="x")
    answer = embeddings.answer(found, answering(request))
    assert [d["embedding"] for d in answer["data"]] == [[0.1], [0.2], [0.3]]
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # total filled from prompt
    assert answer["model"] == "text-embedding-3-small-v2"  # the provider's
    assert "id" not in answer
    parsed = CreateEmbeddingResponse.model_validate(answer)
    assert parsed.data[2].embedding == [0.3]


def test_embeddings_answer_without_model_or_usage_still_parses() -> None:
    request = {"model": EMBED, "input": "a"}
    found = {"data": [{"embedding": [0.5, 0.5]}]}  # no index: at its position
    answer = embeddings.answer(found, answering(request))
    assert answer["model"] == EMBED
    assert answer["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    assert embeddings.usage(found) is None  # unreported: the lead's estimate settles it
    CreateEmbeddingResponse.model_validate(answer)


def test_embeddings_answer_comes_in_the_encoding_the_client_asked() -> None:
    floats = [0.25, -0.5, 0.123456789]
    as_base64 = base64.b64encode(struct.pack("<3f", *floats)).decode()
    asked_base64 = {"model": EMBED, "input": "a", "encoding_format": "base64"}
    assert embeddings.answer(upstream(floats), answering(asked_base64))["data"][0]["embedding"] == as_base64
    assert (
        embeddings.answer(upstream(as_base64), answering(asked_base64))["data"][0]["embedding"] == as_base64
    )
    for asked in ({"model": EMBED, "input": "a"}, {**asked_base64, "encoding_format": "float"}):
        answer = embeddings.answer(upstream(as_base64), answering(asked))
        assert answer["data"][0]["embedding"] == float32(floats)
        CreateEmbeddingResponse.model_validate(answer)


@pytest.mark.parametrize(
    ("request_body", "found", "words"),
    [
        ({"input": ["a", "b"]}, upstream([0.1]), "1 embeddings for 2 inputs"),
        ({"input": "a"}, upstream([0.1], [0.2]), "2 embeddings for 1 inputs"),
        ({"input": [1, 2, 3]}, upstream([0.1], [0.2]), "2 embeddings for 1 inputs"),
        ({"input": ["a", "b"]}, upstream([0.1], [0.2], order=[0, 0]), "indexes"),
        ({"input": ["a"]}, {"data": [{"index": 0}]}, "no index or embedding"),
        ({"input": ["a"]}, {"data": ["nope"]}, "not an object"),
        ({"input": "a", "dimensions": 3}, upstream([0.1, 0.2]), "2 dimensions, 3 asked"),
        ({"input": "a", "dimensions": 3}, upstream(base64.b64encode(b"\0" * 8).decode()), "2 dimensions"),
    ],
)
def test_embeddings_answer_not_fitting_the_request_is_the_providers_fault(
    request_body: dict[str, Any], found: dict[str, Any], words: str
) -> None:
    request = {"model": EMBED, **request_body}
    assert words in (embeddings.fault(found, request) or "")
    with pytest.raises(UpstreamProtocolError, match=words):
        embeddings.answer(found, answering(request))


def test_embeddings_malformed_base64_is_the_providers_fault() -> None:
    request = {"model": EMBED, "input": "a"}
    with pytest.raises(UpstreamProtocolError):
        embeddings.answer(upstream("not base64!"), answering(request))
    with pytest.raises(UpstreamProtocolError):  # 5 bytes: not float32s
        embeddings.answer(upstream(base64.b64encode(b"12345").decode()), answering(request))
    with pytest.raises(UpstreamProtocolError):  # a vector of words cannot be sent as float32s
        embeddings.answer(upstream(["x"]), answering({**request, "encoding_format": "base64"}))


@pytest.mark.parametrize(
    ("usage", "settled"),
    [
        ({"prompt_tokens": 7, "total_tokens": 7}, Usage(7, 0)),
        ({"total_tokens": 5}, Usage(5, 0)),
        ({"prompt_tokens": 4}, Usage(4, 0)),
        ({"prompt_tokens": "4"}, None),
        ({"prompt_tokens": True}, None),
        ("lots", None),
    ],
)
def test_embeddings_usage_reads_prompt_else_total(usage: Any, settled: Usage | None) -> None:
    assert embeddings.usage({"data": [], "usage": usage}) == settled


def test_embeddings_answer_reads_total_when_only_total_is_reported() -> None:
    answer = embeddings.answer(
        upstream([0.1], usage={"total_tokens": 5}), answering({"model": EMBED, "input": "a"})
    )
    assert answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


# -- rerank: requests -----------------------------------------------------------------------


def test_rerank_sends_documents_as_strings_and_keeps_the_rest() -> None:
    body: dict[str, Any] = {
        "model": RERANK,
        "query": "q",
        "documents": ["a", {"text": "b"}],
        "top_n": 1,
        "return_documents": True,
        "max_chunks_per_doc": 4,
    }
    sent = rerank.request(body)
    assert sent == {**body, "documents": ["a", "b"]}
    assert body["documents"][1] == {"text": "b"}  # the client's body is not changed


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "q", "documents": ["a"]}, "model"),
        ({"model": RERANK, "documents": ["a"]}, "query"),
        ({"model": RERANK, "query": "", "documents": ["a"]}, "query"),
        ({"model": RERANK, "query": "q"}, "documents"),
        ({"model": RERANK, "query": "q", "documents": []}, "documents"),
        ({"model": RERANK, "query": "q", "documents": "a"}, "documents"),
        ({"model": RERANK, "query": "q", "documents": ["a"] * 1001}, "documents"),
        ({"model": RERANK, "query": "q", "documents": ["a", 3]}, "documents[1]"),
        ({"model": RERANK, "query": "q", "documents": ["a", {"text": 3}]}, "documents[1]"),
        ({"model": RERANK, "query": "q", "documents": [{"text": "a", "title": "t"}]}, "documents[0]"),
        ({"model": RERANK, "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"model": RERANK, "query": "q", "documents": ["a"], "top_n": True}, "top_n"),
        ({"model": RERANK, "query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents"),
        ({"model": RERANK, "query": "q", "documents": ["a"], "stream": True}, "stream"),
    ],
)
def test_rerank_refuses_naming_the_param(body: dict[str, Any], param: str) -> None:
    assert refused(rerank.request, body) == param


# -- rerank: answers ------------------------------------------------------------------------

DOCUMENTS = ["zero", {"text": "one"}, "two", "three"]


def reranked(results: list[dict[str, Any]], **request: Any) -> dict[str, Any]:
    body = {"model": RERANK, "query": "q", "documents": DOCUMENTS, **request}
    return rerank.answer({"results": results, "usage": {"total_tokens": 9}}, answering(body))


SCORES = [
    {"index": 0, "relevance_score": 0.1},
    {"index": 1, "relevance_score": 0.9},
    {"index": 2, "relevance_score": 0.5},
    {"index": 3, "relevance_score": 0.9},
]


def test_rerank_answer_is_best_first_ties_by_index() -> None:
    answer = reranked(list(reversed(SCORES)))
    assert [(r["index"], r["relevance_score"]) for r in answer["results"]] == [
        (1, 0.9),
        (3, 0.9),
        (2, 0.5),
        (0, 0.1),
    ]
    assert not any("document" in r for r in answer["results"])  # return_documents defaults to false
    assert answer["id"] == "rerank-abc123"
    assert answer["model"] == RERANK
    assert answer["usage"] == {"total_tokens": 9}


def test_rerank_answer_is_cut_to_top_n() -> None:
    assert [r["index"] for r in reranked(SCORES, top_n=2)["results"]] == [1, 3]
    assert len(reranked(SCORES, top_n=10)["results"]) == 4


def test_rerank_documents_are_the_requests_exactly_when_asked() -> None:
    results = [{**r, "document": "what the provider echoed"} for r in SCORES]
    asked = reranked(results, return_documents=True, top_n=2)["results"]
    assert [r["document"] for r in asked] == [{"text": "one"}, {"text": "three"}]
    assert not any("document" in r for r in reranked(results, return_documents=False)["results"])


def test_rerank_takes_score_as_some_services_name_it() -> None:
    answer = reranked([{"index": 2, "score": 0.3}, {"index": 0, "score": 0.7, "document": {"text": "zero"}}])
    assert [(r["index"], r["relevance_score"]) for r in answer["results"]] == [(0, 0.7), (2, 0.3)]


@pytest.mark.parametrize(
    ("results", "words"),
    [
        ([{"index": 4, "relevance_score": 0.1}], "indexes"),
        ([{"index": -1, "relevance_score": 0.1}], "indexes"),
        ([{"index": 0, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.2}], "indexes"),
        ([{"index": 0}], "no index or score"),
        ([{"index": 0, "relevance_score": "high"}], "no index or score"),
        ([{"index": "0", "relevance_score": 0.5}], "no index or score"),
        (["zero"], "not an object"),
    ],
)
def test_rerank_results_not_fitting_the_request_are_the_providers_fault(
    results: list[Any], words: str
) -> None:
    request = {"model": RERANK, "query": "q", "documents": DOCUMENTS}
    assert words in (rerank.fault({"results": results}, request) or "")
    with pytest.raises(UpstreamProtocolError, match=words):
        rerank.answer({"results": results}, answering(request))
    assert "no results" in (rerank.fault({"data": []}, request) or "")


@pytest.mark.parametrize(
    ("found", "settled", "shown"),
    [
        (
            {"usage": {"prompt_tokens": 6, "total_tokens": 6}},
            Usage(6, 0),
            {"prompt_tokens": 6, "total_tokens": 6},
        ),
        ({"usage": {"total_tokens": 8}}, Usage(8, 0), {"total_tokens": 8}),
        ({"usage": {"prompt_tokens": 3}}, Usage(3, 0), {"prompt_tokens": 3, "total_tokens": 3}),
        ({"meta": {"billed_units": {"search_units": 1, "input_tokens": 12.0}}}, Usage(12, 0), None),
        ({"meta": {"tokens": {"input_tokens": 11, "output_tokens": 0}}}, Usage(11, 0), None),
        ({"meta": {"billed_units": {"search_units": 1}}}, None, {"total_tokens": 0}),
        ({}, None, {"total_tokens": 0}),
    ],
)
def test_rerank_usage_reads_what_the_service_reports(
    found: dict[str, Any], settled: Usage | None, shown: dict[str, int] | None
) -> None:
    found = {"results": [{"index": 0, "relevance_score": 1.0}], **found}
    assert rerank.usage(found) == settled
    request = {"model": RERANK, "query": "q", "documents": ["a"]}
    tokens = settled.prompt_tokens if settled else 0
    expected = shown if shown is not None else {"prompt_tokens": tokens, "total_tokens": tokens}
    assert rerank.answer(found, answering(request))["usage"] == expected
