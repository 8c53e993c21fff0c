"""recovery.settle_steps: the store steps that settle a dead replica's request from its intent."""

from __future__ import annotations

import textwrap

import orjson

from router import limits
from router.config import parse
from router.recovery import settle_steps
from router.state import Intent

CONFIG = parse(
    textwrap.dedent("""
    clients:
      - {name: team, key: sk-team-0123456789}
    providers:
      a: {base_url: "http://a", keys: [k], models: {m: {price: {input: 2, output: 8}}}}
"""),
    env={},
)
STARTED = 1_796_000_000.0


def intent(relayed: int = -1, provider: str = "a", price: list[float] | None = None) -> Intent:
    body = {
        "head": {
            "settlement_key": "stl_1",
            "request_id": "req_1",
            "idempotency_key": "idem-1",
            "client": "team",
            "provider": provider,
            "key": "a-0" if provider == "a" else "gone",
            "model": "m",
            "upstream_model": "m",
        },
        "started_at": STARTED,
        "prompt_tokens": 100,
        "completion_tokens": 4096,
        "price": price,
    }
    return Intent("stl_1", orjson.dumps(body), relayed)


def test_a_lost_request_is_recorded_with_what_was_relayed_and_charged_to_client_and_key() -> None:
    (client, _), (key, _) = settle_steps(CONFIG, "c:team", intent(relayed=37), now=STARTED + 2.5)
    record = orjson.loads(client.record or b"")
    assert (record["outcome"], record["usage_source"], record["status"]) == ("replica_lost", "estimated", 502)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (100, 37)
    assert record["duration_ms"] == 2500.0 and record["settlement_key"] == "stl_1"
    cost = 100 * 2 * 1000 + 37 * 8 * 1000
    assert client.cost_nanos == key.cost_nanos == cost and record["cost"] == cost / 1e9
    assert client.tokens == key.tokens == 137
    # Its claim goes, its intent ends, its usage counts in the periods it started in.
    assert client.claim_key == "idem-1" and client.intent and client.stored is None
    assert client.periods == key.periods == limits.periods(STARTED)
    assert key.scope == "p:a/a-0" and key.settlement_key == "stl_1" and key.record is None


def test_without_a_renewal_the_completion_is_the_estimate() -> None:
    (client, _), _ = settle_steps(CONFIG, "c:team", intent(), now=STARTED)
    assert orjson.loads(client.record or b"")["completion_tokens"] == 4096


def test_a_route_gone_from_the_config_is_priced_as_it_was_admitted_and_charges_only_the_client() -> None:
    steps = settle_steps(
        CONFIG, "c:team", intent(relayed=10, provider="b", price=[1.0, None, 4.0]), now=STARTED
    )
    ((client, _),) = steps
    assert client.cost_nanos == 100 * 1 * 1000 + 10 * 4 * 1000


def test_a_lost_request_counts_under_its_endpoint_and_an_older_intent_under_none() -> None:
    named = orjson.loads(intent().body)
    named["head"]["endpoint"] = "embeddings"
    (client, _), (key, _) = settle_steps(CONFIG, "c:team", Intent("stl_1", orjson.dumps(named)), now=STARTED)
    assert client.endpoint == "embeddings" and key.endpoint is None  # a key's usage is not split
    (client, _), _ = settle_steps(CONFIG, "c:team", intent(), now=STARTED)  # written before endpoints
    assert client.endpoint is None
