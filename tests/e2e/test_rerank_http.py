"""/v1/rerank through `router serve --demo`, over plain HTTP: no official SDK speaks the shape
Cohere, Jina and the aggregators share, so clients post it themselves.

The demo's rerank model is real200's `bge-reranker-v2-m3`; its simulator scores a document by
the share of the query's words it holds (router.sim.rag), so the order is known in advance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DEMO_KEY, Served
from tests.e2e.endpoint_fixtures import TIMEOUT

MODEL = "bge-reranker-v2-m3"
QUERY = "red apple pie"
DOCUMENTS = ["a blue sky", "an apple a day", "Red apple pie, the recipe", "pie charts"]
BEST_FIRST = [2, 1, 3, 0]
"""Words of the query each holds: 3, 1, 1, 0; the two with one word stay in request order."""


@pytest.fixture(scope="module")
def http(demo: Served) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    with httpx.Client(base_url=demo.url, headers=headers, timeout=TIMEOUT) as client:
        yield client


def rerank(http: httpx.Client, path: str = "/v1/rerank", **fields: Any) -> httpx.Response:
    return http.post(path, json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS, **fields})


def test_best_match_first(http: httpx.Client) -> None:
    response = rerank(http)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == MODEL and answer["id"].startswith("rerank-")
    results = answer["results"]
    assert [r["index"] for r in results] == BEST_FIRST
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)
    assert all("document" not in r for r in results)  # not asked for: Cohere v2's default
    assert answer["usage"]["prompt_tokens"] > 0
    assert answer["usage"]["total_tokens"] >= answer["usage"]["prompt_tokens"]


def test_top_n(http: httpx.Client) -> None:
    results = rerank(http, top_n=2).json()["results"]
    assert [r["index"] for r in results] == BEST_FIRST[:2]


def test_top_n_above_the_documents_returns_them_all(http: httpx.Client) -> None:
    results = rerank(http, top_n=50).json()["results"]
    assert [r["index"] for r in results] == BEST_FIRST


def test_return_documents(http: httpx.Client) -> None:
    results = rerank(http, return_documents=True, top_n=3).json()["results"]
    assert [r["document"] for r in results] == [{"text": DOCUMENTS[i]} for i in BEST_FIRST[:3]]


def test_documents_as_text_objects(http: httpx.Client) -> None:
    documents = [{"text": text} for text in DOCUMENTS]
    response = rerank(http, documents=documents, return_documents=True)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == BEST_FIRST
    assert results[0]["document"] == {"text": DOCUMENTS[2]}


def test_the_path_without_v1(http: httpx.Client) -> None:
    response = rerank(http, "/rerank")
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["results"]] == BEST_FIRST


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"query": ""}, "query"),
        ({"query": None}, "query"),
        ({"documents": []}, "documents"),
        ({"documents": ["fine", {"text": "x", "title": "extra"}]}, "documents[1]"),
        ({"documents": ["fine", 7]}, "documents[1]"),
        ({"top_n": 0}, "top_n"),
        ({"return_documents": "yes"}, "return_documents"),
        ({"stream": True}, "stream"),
        ({"model": "gpt-4o"}, "model"),  # a chat model
        ({"model": "text-embedding-3-small"}, "model"),  # an embedding model
    ],
)
def test_what_is_wrong_is_named(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    response = rerank(http, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert "x-router-attempts" not in response.headers  # refused before any provider


def test_an_unknown_model_is_not_found(http: httpx.Client) -> None:
    response = rerank(http, model="no-such-reranker")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_key_is_required(demo: Served) -> None:
    body = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}
    response = httpx.post(demo.url + "/v1/rerank", json=body, timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
