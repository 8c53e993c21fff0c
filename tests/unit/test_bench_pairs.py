"""The bench's translated-API pairs (tests/bench/pairs.py, scenarios.py, servers.py): which
scenarios `--only` picks, what each side asks, the config the simulators are served by, and how a
pair is compared and judged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.api import ENDPOINTS
from router.config import load
from tests.bench import pairs, spy
from tests.bench.scenarios import SCENARIOS, Scenario, select
from tests.bench.servers import PROFILES, SIMS, write_config

API_KEYS = [
    "messages:stream=1",
    "responses:stream=1",
    "messages:stream=32",
    "responses:stream=32",
    "embeddings:c=32",
]


def by_key(key: str) -> Scenario:
    return next(s for s in SCENARIOS if s.key == key)


def test_only_api_picks_the_five_pairs_and_nothing_else() -> None:
    assert [s.key for s in select("api")] == API_KEYS
    assert [s.key for s in select("messages")] == ["messages:stream=1", "messages:stream=32"]
    assert [s.key for s in select("embeddings:c=32,stream=1")] == ["stream=1", "embeddings:c=32"]
    assert [s.key for s in select("stream c=32 (responses)")] == ["responses:stream=32"]


def test_the_chat_scenarios_are_as_they_were() -> None:
    assert [s.key for s in select(None) if s.api == "chat"] == [
        "c=1", "c=64", "inflight=500", "stream=1", "stream=32", "stream=1000"
    ]  # fmt: skip
    assert [s.key for s in select("stream=32")] == ["stream=32"]


def test_an_unknown_name_stops_the_run_naming_the_choices() -> None:
    with pytest.raises(SystemExit, match="api, messages, responses, embeddings"):
        select("api,nonsense")


@pytest.mark.parametrize("key", ["messages:stream=32", "responses:stream=1"])
def test_a_streams_twin_is_the_chat_request_its_translation_sends(key: str) -> None:
    scenario = by_key(key)
    own, twin = (orjson.loads(b) for b in pairs.bodies(scenario))
    assert own["stream"] is True and own["model"] == "gpt-4o"
    assert twin == ENDPOINTS[scenario.api].request(own)
    assert twin["stream"] is True and twin["messages"] == [{"role": "user", "content": pairs.PROMPT}]


def test_the_embeddings_twin_is_a_whole_chat_request_with_the_same_text() -> None:
    own, twin = (orjson.loads(b) for b in pairs.bodies(by_key("embeddings:c=32")))
    assert own == {"model": "text-embedding-3-small", "input": pairs.TEXT}
    assert twin == {"model": "bench-rag", "messages": [{"role": "user", "content": pairs.TEXT}]}
    ENDPOINTS["embeddings"].request(own)  # a request router takes


def test_each_router_gets_the_twin_then_the_api() -> None:
    scenario = by_key("messages:stream=1")
    full = PROFILES["full"]
    found = pairs.targets(scenario, [(full, None, 1234)], {0})  # type: ignore[list-item]
    assert [(t.name, t.path, t.api, t.profile) for t in found] == [
        ("full/chat", "/v1/chat/completions", "chat", "full"),
        ("full/messages", "/v1/messages", "messages", "full"),
    ]
    assert all(t.headers.startswith(full.headers) and t.redis for t in found)
    assert b"anthropic-version" in found[1].headers and b"anthropic-version" not in found[0].headers


def test_the_config_serves_embeddings_from_the_real200_simulator(tmp_path: Path) -> None:
    path = write_config(PROFILES["full"], {"fast": 1001, "rag": 1002}, tmp_path, "redis://127.0.0.1:6379/0")
    config = load(path, env={})
    rag = config.providers["sim-rag"]
    assert rag.dialect == "real200" and rag.base_url == "http://127.0.0.1:1002/v1"
    assert rag.stream_usage is False  # real200 streams no usage: router must not wait for it
    assert rag.models["text-embedding-3-small"].kind == "embedding"
    assert rag.models[SIMS["rag"].model].kind == "chat"
    fast = config.providers["sim-fast"]
    assert fast.dialect == "trinity" and fast.base_url == "http://127.0.0.1:1001" and fast.stream_usage


def row(
    rps: float, ttft: float, p50: float = 10.0, cpu: float | None = 1.0, errors: int = 0
) -> dict[str, Any]:
    return {
        "rps": rps,
        "ttft_p50": ttft,
        "p50": p50,
        "router_cpu_ms_per_req": cpu,
        "errors": errors,
        "error_kinds": {"no message_stop": errors} if errors else {},
    }


def test_versus_is_a_ratio_of_req_s_and_differences_of_the_rest() -> None:
    out = pairs.versus(row(90, 1.5, 12.0, 1.2), row(100, 1.25, 10.0, 1.0))
    assert out == pytest.approx({"ratio": 0.9, "ttft_p50": 0.25, "p50": 2.0, "router_cpu_ms_per_req": 0.2})
    assert "ttft_p50" not in pairs.versus(row(1, math.nan), row(1, math.nan))  # no stream, no TTFT
    assert "router_cpu_ms_per_req" not in pairs.versus(row(1, 1, cpu=None), row(1, 1))


def paired() -> list[tuple[Scenario, pairs.Rows]]:
    return [
        (by_key("messages:stream=1"), [("bare/chat", row(50, 2.0)), ("bare/messages", row(49, 2.15))]),
        (by_key("responses:stream=1"), [("bare/chat", row(50, 2.0)), ("bare/responses", row(49, 2.3))]),
        (by_key("messages:stream=32"), [("bare/chat", row(300, 40)), ("bare/messages", row(280, 41))]),
        (
            by_key("responses:stream=32"),
            [("bare/chat", row(300, 40)), ("bare/responses", row(250, 50, errors=2))],
        ),
        (
            by_key("embeddings:c=32"),
            [("bare/chat", row(200, math.nan)), ("bare/embeddings", row(300, math.nan))],
        ),
    ]


def test_goals_judge_ttft_at_c1_and_req_s_at_c32_for_streams_only() -> None:
    lines = pairs.goals(paired())
    assert len(lines) == 4  # embeddings have no target
    assert lines[0].startswith("  [met] stream c=1 (messages) [bare]: TTFT p50 +0.150 ms")
    assert lines[1].startswith("  [NOT met] stream c=1 (responses) [bare]: TTFT p50 +0.300 ms")
    assert lines[2].startswith("  [met] stream c=32 (messages) [bare]: 0.933x")
    assert lines[3].startswith("  [NOT met] stream c=32 (responses) [bare]: 0.833x")


def test_the_table_puts_each_api_beside_its_twin() -> None:
    text = pairs.table(paired(), repeat=2)
    line = next(x for x in text.splitlines() if x.startswith("stream c=32 (messages)"))
    assert line.split() == [
        "stream", "c=32", "(messages)", "bare", "300", "280", "0.93", "40.00", "41.00", "+1.000",
        "10.00", "10.00", "+0.000", "1.000", "1.000", "0/0",
    ]  # fmt: skip
    embeddings = next(x for x in text.splitlines() if x.startswith("embeddings c=32"))
    assert "1.50" in embeddings.split() and "nan" not in embeddings
    notes = pairs.notes(paired())
    assert "  stream c=32 (responses) bare/responses: no message_stop x2" in notes


def spied(api: str, raw: str, cpu: float) -> pairs.Spied:
    return pairs.Spied(by_key("messages:stream=32"), "bare", api, spy.read(raw, seconds=1.0), cpu)


def test_spy_lines_give_microseconds_per_request_by_function_beside_the_twin() -> None:
    base = "main (router/app.py:1);StreamResponse._pump (router/responses.py:10)"
    api_raw = "\n".join(
        [
            f"{base};StreamResponse._translated (router/responses.py:20);"
            "MessageStream.events (router/api/anthropic_messages/stream.py:30) 30",
            f"{base};StreamResponse._translated (router/responses.py:20);"
            "MessageStream.events (router/api/anthropic_messages/stream.py:31);"
            "MessageStream._chunk (router/api/anthropic_messages/stream.py:40) 50",
            f"{base} 20",
        ]
    )
    chat_raw = f"{base};StreamRelay.feed (router/relay.py:5) 40\n{base} 60"
    lines = pairs.spy_lines([spied("chat", chat_raw, 1.0), spied("messages", api_raw, 2.0)])
    assert lines[0].startswith("bare, stream c=32 (messages): router CPU us/request by function")
    rows = {line.split("  ")[1].strip(): line.split()[-2:] for line in lines[2:-1]}
    # 2 ms/request in the API's run: 50 % of it in _chunk itself, 80 % under events
    assert rows["MessageStream._chunk (router/api/anthropic_messages/stream.py)"] == ["1000.0/1000.0", "-"]
    assert rows["MessageStream.events (router/api/anthropic_messages/stream.py)"] == ["1600.0/600.0", "-"]
    assert rows["StreamRelay.feed (router/relay.py)"] == ["-", "400.0/400.0"]
    assert rows["StreamResponse._pump (router/responses.py)"] == ["2000.0/400.0", "1000.0/600.0"]
    assert pairs.spy_lines([spied("messages", api_raw, 2.0)]) == []  # no twin, nothing to set beside


def test_repeats_alternate_which_side_of_a_pair_runs_first() -> None:
    scenario = by_key("responses:stream=32")
    found = pairs.targets(scenario, [(PROFILES["bare"], None, 1), (PROFILES["full"], None, 2)], None)  # type: ignore[list-item]
    names = [[t.name for t in pairs.ordered(found, r)] for r in range(3)]
    assert names[0] == names[2] == ["bare/chat", "bare/responses", "full/chat", "full/responses"]
    assert names[1] == ["bare/responses", "bare/chat", "full/responses", "full/chat"]
