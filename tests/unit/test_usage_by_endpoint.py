"""GET /admin/usage by API endpoint: what the client scope's settlements counted apart
(Settle.endpoint), per period, beside the client's whole usage; chat's is what is left."""

from __future__ import annotations

import textwrap

from router import limits
from router.config import parse
from router.ledger import Ledger
from router.state import Settle, open_store
from router.steps import ClientHold, client_step
from router.types import Usage

CONFIG = parse(
    textwrap.dedent("""
    clients:
      - {name: team, key: sk-team-0123456789, budget: {per: day, tokens: 1000}}
      - {name: idle, key: sk-idle-0123456789}
    providers:
      a: {base_url: "http://a", keys: [k], models: {m: {price: {input: 2, output: 8}}}}
"""),
    env={},
)


async def test_a_clients_usage_by_endpoint_per_period_beside_its_whole_usage() -> None:
    store = open_store(CONFIG.state)
    ledger = Ledger(CONFIG, store)
    day, month, _ = limits.periods()
    now = (day, month, "total")
    earlier = ("2000-01-01", "total")  # a day long gone: counted in total only
    scope = limits.client_scope("team")
    settles = [
        Settle(scope, "s1", tokens=30, cost_nanos=3_000, periods=now),  # chat: not counted apart
        Settle(scope, "s2", tokens=7, cost_nanos=500, periods=now, endpoint="embeddings"),
        Settle(scope, "s3", tokens=5, cost_nanos=100, periods=earlier, endpoint="rerank"),
        Settle(scope, "s4", tokens=2, cost_nanos=0, periods=now),  # settled before endpoints were counted
    ]
    await store.settle_all([(s, False) for s in settles])
    report = await ledger.usage()
    team = report["clients"]["team"]
    assert team["day"] == {"tokens": 39, "cost": 3.5e-6}
    assert team["limit"] == {"per": "day", "tokens": 1000, "remaining": 961}
    zero = {"tokens": 0, "cost": 0.0}
    assert team["by_endpoint"] == {
        # the total less the others: the chat request and the usage from before, alike
        "chat": {p: {"tokens": 32, "cost": 3e-6} for p in ("day", "month", "total")},
        "embeddings": {p: {"tokens": 7, "cost": 5e-7} for p in ("day", "month", "total")},
        "rerank": {"day": zero, "month": zero, "total": {"tokens": 5, "cost": 1e-7}},
    }
    assert report["clients"]["idle"]["by_endpoint"] == {"chat": {"day": zero, "month": zero, "total": zero}}
    assert all("by_endpoint" not in row for keys in report["providers"].values() for row in keys.values())


def test_the_client_step_carries_the_endpoint_its_caller_names() -> None:
    hold = ClientHold("stl_1", "team", None, None)
    ((settle, local),) = client_step(hold, Usage(3, 4), 9, b"{}", None, ("total",), "messages")
    assert (settle.endpoint, settle.tokens, settle.cost_nanos, local) == ("messages", 7, 9, False)
    assert client_step(hold, None, None, None) == []  # nothing taken, nothing to give back
    # Chat is not counted apart: its settlement adds nothing by endpoint.
    ((chat, _),) = client_step(hold, Usage(3, 4), 9, b"{}", None, ("total",), "chat")
    assert chat.endpoint is None
