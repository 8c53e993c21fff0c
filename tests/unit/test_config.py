from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from pathlib import Path

import pytest

from router.config import ConfigError, load, parse
from router.config.expand import expand, parse_duration

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "providers.yaml"
REAL_ENV = {
    "TRINITY_BASE_URL": "https://trinity.example/api",
    "TRINITY_API_KEY": "xh-abc",
    "CHENYU_API_KEY": "sk-chenyu",
    "REAL200_API_KEY": "sk-real200-x",
}

MINIMAL = """
providers:
  p:
    base_url: https://p.example/v1
    keys: [k1]
    models: {m: {}}
"""


def problems(text: str, *, demo: bool = False, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(textwrap.dedent(text), env=env or {}, demo=demo)
    return caught.value.problems


def test_shipped_config_loads_with_keys_from_the_environment() -> None:
    config = load(SHIPPED, env=REAL_ENV)
    trinity = config.providers["trinity"]
    assert trinity.base_url == "https://trinity.example/api"  # no /v1 added
    assert trinity.keys[0].secret == "xh-abc"
    assert config.providers["chenyu"].base_url == "https://api.chenyu.cn/v1"
    assert config.providers["real200"].base_url == "https://real200.com/v1"
    assert config.clients == ()  # the demo client exists only under --demo


def test_shipped_config_encodes_each_document() -> None:
    config = load(SHIPPED, env=REAL_ENV)
    trinity = config.providers["trinity"].models
    assert {
        "gpt-4o",
        "gpt-5.1",
        "gpt-5.2",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "doubao-seed-1-6-thinking-agent-preview",
    } <= set(trinity)
    for model in ("gpt-4o", "gpt-5.1", "gpt-5.2"):
        assert trinity[model].params.drop == {"thinking_enabled", "reasoning_effort"}
    assert trinity["gemini-3-pro-preview"].params.allowed == {
        "reasoning_effort": ("low", "medium", "high"),
        "thinking_enabled": (True,),
    }
    assert config.providers["chenyu"].models["doubao-seed-2-0-lite"].upstream == "doubao-seed-2-0-lite-260428"
    assert config.providers["trinity"].stream_usage is True
    assert config.providers["real200"].stream_usage is False
    assert [t.provider.name for t in config.targets["gpt-4o"]] == ["trinity", "real200"]


def test_shipped_config_under_demo_needs_no_provider_variables() -> None:
    config = load(SHIPPED, demo=True, env={})
    assert [c.name for c in config.clients] == ["demo"]
    assert config.clients[0].demo_key == "sk-router-demo"


def test_unset_variables_are_reported_once_each_with_their_path() -> None:
    found = problems(SHIPPED.read_text())
    assert "providers.trinity.base_url: ${TRINITY_BASE_URL} is not set and has no default" in found
    assert "providers.trinity.keys[0]: ${TRINITY_API_KEY} is not set and has no default" in found
    assert len(found) == 4


def test_demo_still_requires_variables_outside_providers() -> None:
    found = problems(
        """
        clients:
          - {name: team, key: "${TEAM_KEY}"}
        providers:
          p: {base_url: "${P_URL}", keys: ["${P_KEY}"], dialect: trinity, models: {m: {}}}
    """,
        demo=True,
    )
    assert found == ["clients[0].key: ${TEAM_KEY} is not set and has no default"]


def test_a_typo_names_its_path_and_suggests_the_key() -> None:
    found = problems(MINIMAL.replace("keys: [k1]", "keys: [k1]\n    wieght: 2"))
    assert found == ["providers.p.wieght: unknown key (did you mean 'weight'?)"]


def test_bad_values_are_each_reported() -> None:
    found = problems("""
        server: {port: 99999}
        routing:
          strategy: fastest
          timeouts: {connect: 5, first_token: 2m, total: 1m}
        providers:
          p:
            base_url: ftp://p.example
            keys: [k1]
            forward_headers: [Authorization]
            models: {m: {price: {input: cheap, output: 1}}}
    """)
    assert sorted(found) == sorted(
        [
            "providers.p.base_url: expected an http:// or https:// URL",
            "providers.p.forward_headers[0]: Authorization is never forwarded"
            " (client credentials or hop-by-hop)",
            "providers.p.models.m.price.input: expected a number, got 'cheap'",
            "server.port: must be at most 65535, got 99999",
            "routing.timeouts.connect: expected a duration like 250ms, 5s or 2m, got 5",
            "routing.timeouts.first_token: must not be longer than total",
            "routing.strategy: expected one of weighted, ordered, latency, least_busy, got 'fastest'",
        ]
    )


def test_yaml_errors_and_duplicate_keys_name_file_and_line() -> None:
    assert problems("providers: [\n", env={})[0].startswith("<config>:2:")
    found = problems(MINIMAL + "  p:\n    base_url: https://x\n")
    assert found == ["<config>:7:3: duplicate key 'p'"]


def test_client_keys() -> None:
    digest = hashlib.sha256(b"secret-1").hexdigest()
    clients = textwrap.dedent(f"""
        clients:
          - {{name: a, key: secret-1}}
          - {{name: b, key_sha256: "{"0" * 64}", models: ["doubao-*"]}}
    """)
    config = parse(clients + MINIMAL, env={})
    assert config.clients[0].key_sha256.hex() == digest
    assert config.clients[1].models == ("doubao-*",)
    bad = textwrap.dedent(f"""
        clients:
          - {{name: a, key: secret-1}}
          - {{name: b, key: secret-2, key_sha256: "{digest}"}}
          - {{name: c, key_sha256: nothex}}
          - {{name: d, key_sha256: "{digest}"}}
          - {{name: a, key: secret-3}}
    """)
    assert problems(bad + MINIMAL) == [
        "clients[1]: give exactly one of key or key_sha256",
        "clients[2].key_sha256: expected 64 hex characters (see `router keys new`)",
        "clients[3]: same key as client 'a'",
        "clients[4].name: duplicate client name 'a'",
    ]


def test_a_budget_refuses_by_default_caps_on_request_and_names_a_bad_on_exceed() -> None:
    clients = textwrap.dedent("""
        clients:
          - {name: a, key: secret-1, budget: {tokens: 120, per: month}}
          - {name: b, key: secret-2, budget: {cost: 5, per: day, on_exceed: cap}}
    """)
    config = parse(clients + MINIMAL, env={})
    assert [c.budget.on_exceed for c in config.clients if c.budget] == ["refuse", "cap"]
    bad = "clients:\n  - {name: a, key: secret-1, budget: {tokens: 9, on_exceed: truncate}}\n"
    assert problems(bad + MINIMAL) == [
        "clients[0].budget.on_exceed: expected one of refuse, cap, got 'truncate'"
    ]
    quota = MINIMAL.replace("keys: [k1]", "keys: [k1]\n    quota: {tokens: 9, on_exceed: cap}")
    assert problems(quota) == [
        "providers.p.quota.on_exceed: unknown key (expected one of: cost, per, tokens)"
    ]


def test_expansion_and_defaults() -> None:
    tree, missing = expand({"a": "${X}", "b": ["${Y:-dflt}", "x${X}y"], "c": "${Z}"}, {"X": "1", "Y": ""})
    assert tree == {"a": "1", "b": ["dflt", "x1y"], "c": ""}
    assert missing == [("c", "Z")]
    config = parse(MINIMAL + 'server: {port: "${PORT:-9090}"}\n', env={})
    assert config.server.port == 9090


def test_a_value_from_the_environment_is_never_parsed_as_yaml() -> None:
    config = parse(MINIMAL + 'admin: {key: "${ADMIN}"}\n', env={"ADMIN": "a: b #c"})
    assert config.admin.key == "a: b #c"
    found = problems(MINIMAL.replace("[k1]", '["${KEY}"]'), env={"KEY": "a: b #c"})
    assert found == ["providers.p.keys[0]: must be printable ASCII without spaces"]


def test_metrics_key_defaults_to_none_and_expands_from_the_environment() -> None:
    assert parse(MINIMAL, env={}).metrics.key is None
    assert parse(MINIMAL + 'metrics: {key: "${MK:-}"}\n', env={}).metrics.key is None
    config = parse(MINIMAL + 'metrics: {key: "${MK}"}\n', env={"MK": "m-secret"})
    assert config.metrics.key == "m-secret"
    assert "m-secret" not in repr(config)
    assert config.with_upstreams({"p": "http://127.0.0.1:1"}, "demo").metrics.key == "m-secret"
    assert problems(MINIMAL + "metrics: {keys: x}\n") == ["metrics.keys: unknown key (did you mean 'key'?)"]
    assert problems(MINIMAL + 'metrics: {key: "${MK}"}\n') == [
        "metrics.key: ${MK} is not set and has no default"
    ]


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5s") == 5
    assert parse_duration("2m") == 120
    assert parse_duration("1h") == 3600
    assert parse_duration("5") is None
    assert parse_duration("fast") is None


def test_params_merge_provider_and_model_rules() -> None:
    config = parse(
        textwrap.dedent("""
        providers:
          p:
            base_url: https://p.example
            keys: [k1, {name: second, key: k2}]
            params: {drop: [a], rename: {max_completion_tokens: max_tokens}, defaults: {temperature: 0.5}}
            models:
              m: {upstream: m-2025, params: {drop: [b], defaults: {temperature: 1}}}
    """),
        env={},
    )
    route = config.providers["p"].models["m"]
    assert route.upstream == "m-2025"
    assert route.params.drop == {"a", "b"}
    assert route.params.defaults == {"temperature": 1}
    assert route.params.rename == {"max_completion_tokens": "max_tokens"}
    assert [t.key.name for t in config.targets["m"]] == ["p-0", "second"]


def test_loaded_config_is_frozen() -> None:
    config = parse(MINIMAL, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routing = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.providers["q"] = config.providers["p"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.providers["p"].models["m"].params.defaults["x"] = 1  # type: ignore[index]


def test_secrets_do_not_appear_in_reprs() -> None:
    config = parse(
        MINIMAL.replace("[k1]", "[sk-very-secret]") + "clients: [{name: a, key: also-secret}]\n", env={}
    )
    assert "sk-very-secret" not in repr(config)
    assert "also-secret" not in repr(config)


def test_a_list_as_a_key_is_a_problem_not_a_traceback() -> None:
    assert problems("providers:\n  ? [a, b]\n  : {}\n")[0].startswith("<config>:2:")


def test_a_bad_state_url_never_shows_its_password() -> None:
    found = problems(MINIMAL + "state: {url: 'redis:/:hunter2@redis.internal:6379'}\n")
    expected = "expected memory://, redis://…, rediss://… or redis+cluster://…, got a URL without a scheme"
    assert found == [f"state.url: {expected}"]
    assert "hunter2" not in "".join(problems(MINIMAL + "state: {url: 'mysql://u:hunter2@db'}\n"))


def test_timeout_defaults_shrink_to_a_short_total_but_explicit_values_may_not_exceed_it() -> None:
    config = parse(MINIMAL + "routing: {timeouts: {total: 20s}}\n", env={})
    assert config.routing.timeouts.response == 20 and config.routing.timeouts.first_token == 20
    assert problems(MINIMAL + "routing: {timeouts: {response: 5m, total: 1m}}\n") == [
        "routing.timeouts.response: must not be longer than total"
    ]


def test_a_key_with_a_trailing_newline_is_refused_not_sent() -> None:
    # A Kubernetes secret made with --from-file keeps the file's newline; on the wire it would
    # end the header block early. `$` in a regex matches before a final "\n"; the checks must not.
    found = problems(MINIMAL.replace("[k1]", '["${KEY}"]'), env={"KEY": "sk-abc\n"})
    assert found == ["providers.p.keys[0]: must be printable ASCII without spaces"]


def test_server_edge_limits_have_defaults_and_are_checked() -> None:
    server = parse(MINIMAL, env={}).server
    assert (server.max_header_bytes, server.max_headers, server.max_connections) == (65536, 100, 10000)
    assert (server.header_timeout, server.body_idle_timeout, server.body_timeout) == (10.0, 30.0, 60.0)
    assert (server.keepalive_timeout, server.metrics_port) == (5.0, None)
    custom = parse(
        "server: {max_header_bytes: 8192, max_headers: 20, header_timeout: 2s, body_idle_timeout: 500ms,"
        " body_timeout: 1m, keepalive_timeout: 1s, max_connections: 50, metrics_port: 9090}\n" + MINIMAL,
        env={},
    ).server
    assert (custom.max_header_bytes, custom.max_headers, custom.max_connections) == (8192, 20, 50)
    assert (custom.header_timeout, custom.body_idle_timeout, custom.body_timeout) == (2.0, 0.5, 60.0)
    assert (custom.keepalive_timeout, custom.metrics_port) == (1.0, 9090)
    assert sorted(
        problems(
            "server: {port: 9000, metrics_port: 9000, max_header_bytes: 100, max_headers: 0,"
            " header_timeout: 10, max_connections: -1}\n" + MINIMAL
        )
    ) == [
        "server.header_timeout: expected a duration like 250ms, 5s or 2m, got 10",
        "server.max_connections: must be at least 1, got -1",
        "server.max_header_bytes: must be at least 1024, got 100",
        "server.max_headers: must be at least 1, got 0",
        "server.metrics_port: must differ from server.port (9000)",
    ]


def test_hedging_is_off_unless_configured_and_each_bad_value_names_its_path() -> None:
    assert parse(MINIMAL, env={}).routing.hedge is None
    hedge = parse(
        MINIMAL + "routing: {hedge: {after: 1s, budget: 25%, models: {m: off, n: 500ms}}}\n", env={}
    ).routing.hedge
    assert hedge is not None and (hedge.after, hedge.max, hedge.budget) == (1.0, 1, 0.25)
    assert (hedge.after_for("m"), hedge.after_for("n"), hedge.after_for("other")) == (None, 0.5, 1.0)
    found = problems(MINIMAL + "routing: {hedge: {after: soon, max: 9, budget: 150%, models: {m: never}}}\n")
    assert sorted(p.split(":")[0] for p in found) == [
        "routing.hedge.after",
        "routing.hedge.budget",
        "routing.hedge.max",
        "routing.hedge.models.m",
    ]


def test_a_model_kind_is_chat_unless_declared_and_one_kind_wherever_served() -> None:
    config = parse(
        textwrap.dedent("""
        providers:
          p:
            base_url: https://p.example/v1
            keys: [k1]
            models: {m: {}, e: {kind: embedding}, r: {kind: rerank}}
        """),
        env={},
    )
    assert {name: targets[0].route.kind for name, targets in config.targets.items()} == {
        "m": "chat", "e": "embedding", "r": "rerank",
    }  # fmt: skip
    assert problems("""
        providers:
          p:
            base_url: https://p.example/v1
            keys: [k1]
            models: {e: {kind: embedding}, x: {kind: image}}
          q:
            base_url: https://q.example/v1
            keys: [k2]
            models: {e: {kind: rerank}}
        """) == [
        "providers.p.models.x.kind: expected one of chat, embedding, rerank, got 'image'",
        "providers.q.models.e.kind: 'rerank', but another provider serves 'e' as 'embedding'",
    ]


def test_demo_only_models_exist_under_demo_alone() -> None:
    shipped = load(SHIPPED, env=REAL_ENV)
    demo = load(SHIPPED, demo=True, env={})
    examples = {"text-embedding-3-small", "bge-reranker-v2-m3"}
    assert examples.isdisjoint(shipped.targets)
    assert examples <= set(demo.targets)
    assert demo.targets["text-embedding-3-small"][0].route.kind == "embedding"
    assert demo.targets["bge-reranker-v2-m3"][0].route.kind == "rerank"


def test_a_probe_asks_a_chat_model() -> None:
    config = parse(
        textwrap.dedent("""
        providers:
          p:
            base_url: https://p.example/v1
            keys: [k1]
            probe: {interval: 30s}
            models: {e: {kind: embedding}, m: {}}
        """),
        env={},
    )
    probe = config.providers["p"].probe
    assert probe is not None and probe.model == "m"  # the first chat model, not the first model
    assert problems("""
        providers:
          p:
            base_url: https://p.example/v1
            keys: [k1]
            probe: {interval: 30s, model: e}
            models: {e: {kind: embedding}, m: {}}
          q:
            base_url: https://q.example/v1
            keys: [k2]
            probe: {interval: 30s}
            models: {r: {kind: rerank}}
        """) == [
        "providers.p.probe.model: 'e' is not a chat model (kind embedding): a probe asks one",
        "providers.q.probe: this provider serves no chat model to probe with",
    ]
