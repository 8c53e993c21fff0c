"""GET /v1/models/{id} (and /models/{id}): one OpenAI model object, as the list shows it."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
NARROW_KEY = "sk-test-narrow-key"
NARROW = {"Authorization": f"Bearer {NARROW_KEY}"}
MODELS = ["gpt-4o", "gpt-5.1", "meta-llama/llama-3.1-8b"]


@pytest.fixture
def served(sim: Sim, router: Router) -> RouterThread:
    text = provider_yaml("real200", sim("real200"), MODELS)
    clients = (
        f"clients:\n  - {{name: tests, key: {CLIENT_KEY}}}\n"
        f"  - {{name: narrow, key: {NARROW_KEY}, models: ['gpt-4o', 'other-*']}}\n"
    )
    return router(f"{clients}providers:\n{text}")


def test_a_model_the_client_may_use_is_its_entry_of_the_list(served: RouterThread) -> None:
    listed = {m["id"]: m for m in httpx.get(served.url + "/v1/models", headers=AUTH).json()["data"]}
    assert sorted(listed) == sorted(MODELS)
    for model in MODELS:  # dots and a slash in the id
        for prefix in ("/v1/models/", "/models/"):
            answer = httpx.get(served.url + prefix + model, headers=AUTH)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("application/json")
            assert answer.json() == listed[model]
    assert listed["gpt-5.1"] == {"id": "gpt-5.1", "object": "model", "created": 0, "owned_by": "router"}
    assert httpx.get(served.url + "/v1/models/meta-llama%2Fllama-3.1-8b", headers=AUTH).status_code == 200


def test_not_allowed_and_unserved_models_are_404_model_not_found(served: RouterThread) -> None:
    for path, headers in [
        ("/v1/models/gpt-5.1", NARROW),  # served, outside the client's allow-list
        ("/models/gpt-5.1", NARROW),
        ("/v1/models/other-model", NARROW),  # allowed by a glob, served by no one
        ("/v1/models/gpt-4", AUTH),  # served by no one
        ("/models/no.such/model", AUTH),
    ]:
        answer = httpx.get(served.url + path, headers=headers)
        assert answer.status_code == 404, path
        error = answer.json()["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error", path
        assert error["param"] == "model" and path.rsplit("/models/", 1)[1] in error["message"]
    assert httpx.get(served.url + "/v1/models/gpt-4o", headers=NARROW).status_code == 200


def test_retrieving_a_model_needs_a_client_key(served: RouterThread) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        for prefix in ("/v1/models/", "/models/"):
            answer = httpx.get(served.url + prefix + "gpt-4o", headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"


def test_the_openai_sdk_retrieves_a_model(served: RouterThread) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
    model = client.models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "router")
    assert client.models.retrieve("gpt-5.1").id == "gpt-5.1"
    assert client.models.retrieve("meta-llama/llama-3.1-8b").id == "meta-llama/llama-3.1-8b"
    assert [m.id for m in client.models.list()] == sorted(MODELS)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("gpt-unknown")
    assert unknown.value.code == "model_not_found"
    narrow = openai.OpenAI(base_url=served.url + "/v1", api_key=NARROW_KEY, max_retries=0, timeout=10)
    with pytest.raises(openai.NotFoundError):
        narrow.models.retrieve("gpt-5.1")
    anonymous = openai.OpenAI(base_url=served.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.retrieve("gpt-4o")
