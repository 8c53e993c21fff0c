"""The simulators serve embeddings and rerank over real sockets: answers, 400s, auth, faults, counters."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse

from router.sim import SimServer
from router.sim.rag import DEFAULT_DIMENSIONS, decode

Sim = Callable[..., SimServer]
AUTH = {"Authorization": "Bearer xh-test"}
EMBED = "text-embedding-3-small"
RERANK = "bge-reranker-v2-m3"


def post(server: SimServer, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=5, **kwargs)


def embed(server: SimServer, value: Any, **extra: Any) -> dict[str, Any]:
    response = post(server, "/embeddings", {"model": EMBED, "input": value, **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def vectors(answer: dict[str, Any]) -> list[Any]:
    return [item["embedding"] for item in answer["data"]]


def control(server: SimServer, what: str) -> Any:
    return httpx.get(f"http://127.0.0.1:{server.port}/_sim/{what}", timeout=5).json()


# -- embeddings -----------------------------------------------------------------------------


def test_an_embedding_is_a_unit_vector_that_depends_on_its_text(sim: Sim) -> None:
    real200 = sim("real200")
    answer = embed(real200, "hello world")
    CreateEmbeddingResponse.model_validate(answer)
    (vector,) = vectors(answer)
    assert len(vector) == DEFAULT_DIMENSIONS
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-9)
    assert vectors(embed(real200, "hello world")) == [vector]
    assert vectors(embed(real200, "hello there")) != [vector]
    assert answer["model"] == EMBED and answer["object"] == "list"
    assert answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}  # "hello", " world"


def test_a_batch_is_each_input_embedded_in_order(sim: Sim) -> None:
    real200 = sim("real200")
    texts = ["one", "two words", "and three words"]
    batch = embed(real200, texts)
    assert [item["index"] for item in batch["data"]] == [0, 1, 2]
    assert vectors(batch) == [vectors(embed(real200, text))[0] for text in texts]
    assert batch["usage"]["prompt_tokens"] == 1 + 2 + 3


def test_token_arrays_embed_and_count_their_length(sim: Sim) -> None:
    real200 = sim("real200")
    assert embed(real200, list(range(3000)))["usage"]["prompt_tokens"] == 3000  # one input, however long
    one = embed(real200, [11, 12, 13])
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 3
    two = embed(real200, [[11, 12, 13], [7]])
    assert vectors(two)[0] == vectors(one)[0]
    assert two["usage"]["prompt_tokens"] == 4


def test_dimensions_cut_the_vector_and_normalise_it_again(sim: Sim) -> None:
    real200 = sim("real200")
    (full,) = vectors(embed(real200, "cut me"))
    (short,) = vectors(embed(real200, "cut me", dimensions=64))
    assert len(short) == 64
    norm = math.sqrt(math.fsum(x * x for x in full[:64]))
    assert short == pytest.approx([x / norm for x in full[:64]], rel=1e-12)


def test_base64_is_the_float_answer_as_float32(sim: Sim) -> None:
    real200 = sim("real200")
    texts = ["first", "second"]
    floats = vectors(embed(real200, texts, dimensions=16))
    encoded = vectors(embed(real200, texts, dimensions=16, encoding_format="base64"))
    assert all(isinstance(e, str) for e in encoded)
    for text, vector in zip(encoded, floats, strict=True):
        assert decode(text) == list(struct.unpack("<16f", struct.pack("<16f", *vector)))


def test_the_openai_sdk_reads_its_default_base64_answer(sim: Sim) -> None:
    real200 = sim("real200")
    client = openai.OpenAI(base_url=real200.base_url, api_key="xh-test", max_retries=0)
    try:
        created = client.embeddings.create(model=EMBED, input=["alpha", "beta"], dimensions=8)
    finally:
        client.close()
    assert control(real200, "requests")[-1]["body"]["encoding_format"] == "base64"  # the SDK's default
    floats = vectors(embed(real200, ["alpha", "beta"], dimensions=8))
    assert [e.embedding for e in created.data] == [pytest.approx(v, rel=1e-6) for v in floats]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": ["a", 3]}, "input[1]"),
        ({"input": [[1], [2, "x"]]}, "input[1]"),
        ({"input": ["a"] * 2049}, "input"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "stream": False}, "stream"),
        ({"input": "a", "model": "gpt-4o"}, "model"),
        ({"input": "a", "model": RERANK}, "model"),
    ],
)
def test_embeddings_refusals_name_the_param(sim: Sim, extra: dict[str, Any], param: str) -> None:
    response = post(sim("real200"), "/embeddings", {"model": EMBED, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


# -- rerank ---------------------------------------------------------------------------------

DOCUMENTS = [
    "a recipe for bread",
    "how to bake an apple pie at home",
    "apple orchards of Normandy",
    "how pie tins are made",
]


def rank(server: SimServer, **extra: Any) -> dict[str, Any]:
    body = {"model": RERANK, "query": "how to bake an apple pie", "documents": DOCUMENTS, **extra}
    response = post(server, "/rerank", body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_rerank_puts_the_document_sharing_most_query_words_first(sim: Sim) -> None:
    answer = rank(sim("real200"))
    results = answer["results"]
    assert [r["index"] for r in results] == [1, 3, 2, 0]  # 6 of 6 query words, 2, 1, none
    assert results[0]["relevance_score"] == 1.0 and results[-1]["relevance_score"] == 0.0
    assert all(0 <= r["relevance_score"] <= 1 for r in results)
    assert not any("document" in r for r in results)
    words = sum(len(d.split()) for d in DOCUMENTS) + len("how to bake an apple pie".split())
    assert answer["usage"] == {"prompt_tokens": words, "total_tokens": words}


def test_rerank_top_n_and_return_documents(sim: Sim) -> None:
    results = rank(sim("real200"), top_n=2, return_documents=True)["results"]
    assert [(r["index"], r["document"]["text"]) for r in results] == [(1, DOCUMENTS[1]), (3, DOCUMENTS[3])]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"query": ""}, "query"),
        ({"documents": []}, "documents"),
        ({"documents": [{"text": "objects are router's to flatten"}]}, "documents[0]"),
        ({"top_n": 0}, "top_n"),
        ({"return_documents": "yes"}, "return_documents"),
        ({"stream": True}, "stream"),
        ({"model": EMBED}, "model"),
    ],
)
def test_rerank_refusals_name_the_param(sim: Sim, extra: dict[str, Any], param: str) -> None:
    body = {"model": RERANK, "query": "q", "documents": ["a"], **extra}
    response = post(sim("real200"), "/rerank", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


# -- what every API path shares: models, auth, faults, counters ------------------------------


def test_unknown_models_get_the_dialects_answer(sim: Sim) -> None:
    missing = post(sim("real200"), "/embeddings", {"model": "text-embedding-9", "input": "a"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    trinity = sim("trinity")  # serves the paths (under its base URL, no /v1) but no such model
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/embeddings", {"model": EMBED, "input": "a"}),
        ("/rerank", {"model": RERANK, "query": "q", "documents": ["a"]}),
    ]
    for path, body in bodies:
        response = post(trinity, path, body)
        assert response.status_code == 503 and "无可用渠道" in response.json()["error"]["message"]


def test_the_models_list_names_embedding_and_rerank_models(sim: Sim) -> None:
    listed = httpx.get(sim("real200").base_url + "/models", timeout=5).json()
    assert {EMBED, RERANK, "gpt-4o"} <= {m["id"] for m in listed["data"]}


def test_keys_are_checked_on_every_path(sim: Sim) -> None:
    server = sim("real200", keys=("sk-good",))
    body = {"model": EMBED, "input": "a"}
    assert post(server, "/embeddings", body).status_code == 401
    assert httpx.post(server.base_url + "/rerank", json=body, timeout=5).status_code == 401
    good = post(server, "/embeddings", body, headers={"Authorization": "Bearer sk-good"})
    assert good.status_code == 200


def test_status_faults_apply_as_to_chat(sim: Sim) -> None:
    server = sim("real200", faults="status=429,retry_after=3,times=1")
    limited = post(server, "/embeddings", {"model": EMBED, "input": "a"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert post(server, "/embeddings", {"model": EMBED, "input": "a"}).status_code == 200
    own = post(
        server,
        "/rerank",
        {"model": RERANK, "query": "q", "documents": ["a"]},
        headers={"X-Sim-Fault": "status=503"},
    )
    assert own.status_code == 503
    assert server.faults_injected == 2


@pytest.mark.parametrize("fault", ["reset", "cut=0"])
def test_connection_faults_apply_as_to_chat(sim: Sim, fault: str) -> None:
    server = sim("real200")
    body = {"model": RERANK, "query": "q", "documents": ["a"], "sim_fault": fault}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(server, "/rerank", body)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(server, "/embeddings", {"model": EMBED, "input": "a"}, headers={"X-Sim-Fault": fault})


def test_silent_fault_never_answers(sim: Sim) -> None:
    server = sim("real200", faults="silent,times=1")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base_url + "/embeddings", json={"model": EMBED, "input": "a"}, headers=AUTH, timeout=0.3
        )
    assert post(server, "/embeddings", {"model": EMBED, "input": "a"}).status_code == 200


def test_stats_and_records_count_every_api_request(sim: Sim) -> None:
    server = sim("real200")
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert post(server, "/chat/completions", chat).status_code == 200
    embed(server, "a")
    rank(server)
    post(server, "/embeddings", {"model": "gpt-4o", "input": "a"})  # refused, but served
    assert control(server, "stats")["requests"] == 4
    assert (server.chat_requests, server.rag_requests) == (1, 3)
    paths = [r["path"] for r in control(server, "requests")]
    assert paths == ["/v1/chat/completions", "/v1/embeddings", "/v1/rerank", "/v1/embeddings"]
    assert httpx.post(f"http://127.0.0.1:{server.port}/_sim/reset", timeout=5).status_code == 200
    assert control(server, "stats")["requests"] == 0


def test_other_paths_and_methods_are_not_served(sim: Sim) -> None:
    server = sim("real200")
    assert post(server, "/embedding", {"model": EMBED, "input": "a"}).status_code == 404
    assert httpx.get(server.base_url + "/rerank", headers=AUTH, timeout=5).status_code == 405
    assert control(server, "stats")["requests"] == 0
