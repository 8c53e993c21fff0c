"""/v1/embeddings through `router serve --demo`, as the official openai SDK calls it.

The demo's embedding model is real200's `text-embedding-3-small`, answered by its simulator:
a vector depends only on its text (router.sim.rag), so the tests can tell whether router
kept each vector with its input and decoded what it claims to.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator

import openai
import pytest

from router.sim import rag
from tests.e2e.conftest import Served
from tests.e2e.endpoint_fixtures import openai_client

MODEL = "text-embedding-3-small"
TEXTS = ["The quick brown fox", "jumps over", "the lazy dog"]


@pytest.fixture(scope="module")
def sdk(demo: Served) -> Iterator[openai.OpenAI]:
    with openai_client(demo.url) as client:
        yield client


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_one_input(sdk: openai.OpenAI) -> None:
    answer = sdk.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert answer.object == "list" and answer.model == MODEL
    (item,) = answer.data
    assert item.index == 0 and item.object == "embedding"
    assert item.embedding == pytest.approx(rag.vector(TEXTS[0], rag.DEFAULT_DIMENSIONS))
    assert norm(item.embedding) == pytest.approx(1.0)
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens


def test_a_batch_keeps_each_vector_with_its_input(sdk: openai.OpenAI) -> None:
    answer = sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [item.index for item in answer.data] == [0, 1, 2]
    for text, item in zip(TEXTS, answer.data, strict=True):
        assert item.embedding == pytest.approx(rag.vector(text, rag.DEFAULT_DIMENSIONS))
    single = sdk.embeddings.create(model=MODEL, input=TEXTS[1], encoding_format="float")
    assert single.usage.prompt_tokens < answer.usage.prompt_tokens  # usage counts every input


def test_base64_is_float32_of_the_same_vector(sdk: openai.OpenAI) -> None:
    floats = sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    # Explicit base64: the SDK hands the string over as it came.
    raw = sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    for plain, packed in zip(floats.data, raw.data, strict=True):
        assert isinstance(packed.embedding, str)
        data = base64.b64decode(packed.embedding, validate=True)
        assert list(struct.unpack(f"<{len(data) // 4}f", data)) == pytest.approx(plain.embedding, rel=1e-6)
    # No encoding named: the SDK asks for base64 itself and decodes it.
    decoded = sdk.embeddings.create(model=MODEL, input=TEXTS)
    for plain, unpacked in zip(floats.data, decoded.data, strict=True):
        assert unpacked.embedding == pytest.approx(plain.embedding, rel=1e-6)


def test_dimensions(sdk: openai.OpenAI) -> None:
    answer = sdk.embeddings.create(model=MODEL, input=TEXTS[:2], dimensions=64, encoding_format="float")
    assert [len(item.embedding) for item in answer.data] == [64, 64]
    assert norm(answer.data[0].embedding) == pytest.approx(1.0)


def test_a_chat_model_is_not_an_embedding_model(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="gpt-4o", input="hello")
    assert caught.value.param == "model"
    assert "x-router-attempts" not in caught.value.response.headers  # refused before any provider


def test_an_embedding_model_cannot_chat(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}])
    assert caught.value.param == "model"


def test_an_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.embeddings.create(model="no-such-embedder", input="hello")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("value", "param"),
    [([], "input"), (["fine", ""], "input[1]"), ([[1, 2], [3, -1]], "input[1][1]")],
)
def test_bad_input_is_named(sdk: openai.OpenAI, value: object, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=MODEL, input=value)  # type: ignore[arg-type]
    assert caught.value.param == param


def test_bad_dimensions_are_named(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=MODEL, input="hello", dimensions=0)
    assert caught.value.param == "dimensions"
