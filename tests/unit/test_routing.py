"""plan(): strategies, priority tiers, stickiness, failing open. Pure, no I/O."""

from __future__ import annotations

import math
import random
import textwrap
from collections import Counter

import pytest

from router.config import Target, parse
from router.health import Status, View
from router.routing import STRATEGIES, plan, rendezvous

CONFIG = parse(
    textwrap.dedent("""
    providers:
      a: {base_url: "http://a", keys: [k], weight: 3, models: {m: {}}}
      b: {base_url: "http://b", keys: [k], weight: 1, models: {m: {}}}
      c: {base_url: "http://c", keys: [k], weight: 1, priority: 2, models: {m: {}}}
"""),
    env={},
)
A, B, C = CONFIG.targets["m"]
NOW = 100.0


def views(**states: View) -> dict[Target, View]:
    base = {t: View(Status.CLOSED, NOW) for t in (A, B, C)}
    return {**base, **{t: states[t.provider.name] for t in (A, B, C) if t.provider.name in states}}


def first(strategy: str = "weighted", seed: int = 0, **kw: object) -> Target:
    rng = random.Random(seed)
    return plan(
        (A, B, C),
        kw.pop("v", views()),
        now=NOW,
        strategy=STRATEGIES[strategy],
        rng=rng,  # type: ignore[arg-type]
        **kw,
    )[0].target  # type: ignore[arg-type]


def test_weighted_first_picks_follow_weights_within_statistical_bounds() -> None:
    rng = random.Random(42)
    n = 20000
    counts = Counter(
        plan((A, B, C), views(), now=NOW, strategy=STRATEGIES["weighted"], rng=rng)[0].target.provider.name
        for _ in range(n)
    )
    p = 0.75
    assert counts["c"] == 0  # the lower tier only when the top tier is unusable
    assert abs(counts["a"] / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_tiers_come_in_priority_order_and_each_target_once() -> None:
    order = [
        c.target
        for c in plan((A, B, C), views(), now=NOW, strategy=STRATEGIES["weighted"], rng=random.Random(1))
    ]
    assert order[2] is C and set(order) == {A, B, C}


def test_ordered_is_config_order() -> None:
    assert [
        c.target
        for c in plan((B, A, C), views(), now=NOW, strategy=STRATEGIES["ordered"], rng=random.Random())
    ] == [B, A, C]


def test_unusable_targets_are_left_out_and_the_next_tier_steps_in() -> None:
    down = View(Status.OPEN, NOW + 10)
    assert first(v=views(a=down)) is B
    assert first(v=views(a=down, b=View(Status.DRAINED, math.inf))) is C


def test_when_nothing_is_usable_routing_fails_open_but_honours_retry_after() -> None:
    candidates = plan(
        (A, B, C),
        views(
            a=View(Status.OPEN, NOW + 20), b=View(Status.COOLING, NOW + 5), c=View(Status.BROKEN, math.inf)
        ),
        now=NOW,
        strategy=STRATEGIES["weighted"],
        rng=random.Random(),
    )
    # the open breaker is tried now; the rate-limited one only after its Retry-After
    assert [(c.target, c.not_before) for c in candidates] == [(B, NOW + 5), (A, NOW)]
    both_open = plan(
        (A, B),
        views(a=View(Status.OPEN, NOW + 20), b=View(Status.OPEN, NOW + 9)),
        now=NOW,
        strategy=STRATEGIES["weighted"],
        rng=random.Random(),
    )
    assert [c.target for c in both_open] == [B, A]  # the one whose cooldown ends first
    assert (
        plan(
            (A,),
            {A: View(Status.EXHAUSTED, NOW + 900)},
            now=NOW,
            strategy=STRATEGIES["weighted"],
            rng=random.Random(),
        )
        == []
    )  # out of quota: not worth waiting for


def test_tried_targets_go_last() -> None:
    order = [
        c.target
        for c in plan(
            (A, B, C), views(), now=NOW, strategy=STRATEGIES["ordered"], rng=random.Random(), tried=[A]
        )
    ]
    assert order == [B, C, A]


def test_latency_prefers_the_fastest_but_explores_and_measures_new_targets() -> None:
    fast, slow = View(Status.CLOSED, NOW, latency=0.1), View(Status.CLOSED, NOW, latency=0.9)
    picks = Counter(first("latency", seed=s, v=views(a=slow, b=fast)) for s in range(2000))
    assert 0.8 < picks[B] / 2000 < 0.97  # mostly the fast one; now and then the other
    assert first("latency", v=views(a=slow, b=View(Status.CLOSED, NOW))) is B  # unmeasured: try it


def test_least_busy() -> None:
    assert (
        first(
            "least_busy",
            v=views(a=View(Status.CLOSED, NOW, inflight=5), b=View(Status.CLOSED, NOW, inflight=1)),
        )
        is B
    )


def test_a_conversation_sticks_to_one_target_and_a_loss_moves_only_its_own() -> None:
    conversations = [f"conv-{i}" for i in range(400)]
    before = {c: first(conversation=c, seed=i) for i, c in enumerate(conversations)}
    assert all(first(conversation=c, seed=i + 999) is before[c] for i, c in enumerate(conversations))
    share = Counter(t.provider.name for t in before.values())
    assert 0.65 < share["a"] / 400 < 0.85  # weighted rendezvous: about 3:1
    after = {c: first(conversation=c, v=views(a=View(Status.OPEN, NOW + 30))) for c in conversations}
    moved = [c for c in conversations if after[c] is not before[c]]
    assert moved and all(before[c] is A for c in moved)  # only a's conversations moved
    assert rendezvous("x", [A, B]) is rendezvous("x", [B, A])


def test_losing_one_of_three_moves_only_its_conversations_and_keeps_the_others() -> None:
    three = parse(
        textwrap.dedent("""
        providers:
          p: {base_url: "http://p", keys: [k], models: {m: {}}}
          q: {base_url: "http://q", keys: [k], models: {m: {}}}
          r: {base_url: "http://r", keys: [k], models: {m: {}}}
    """),
        env={},
    ).targets["m"]
    conversations = [f"c{i}" for i in range(600)]
    before = {c: rendezvous(c, three) for c in conversations}
    assert {t.provider.name for t in before.values()} == {"p", "q", "r"}
    after = {c: rendezvous(c, [t for t in three if t.provider.name != "q"]) for c in conversations}
    assert all(after[c] is before[c] for c in conversations if before[c].provider.name != "q")
    moved = {after[c].provider.name for c in conversations if before[c].provider.name == "q"}
    assert moved == {"p", "r"}  # q's conversations spread over both survivors


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_each_usable_target_once(name: str) -> None:
    order = [
        c.target for c in plan((A, B, C), views(), now=NOW, strategy=STRATEGIES[name], rng=random.Random())
    ]
    assert sorted(t.provider.name for t in order) == ["a", "b", "c"]
