"""Usage as read from a provider's answer, and what it costs (cached prompt tokens included)."""

from __future__ import annotations

from typing import Any

import pytest

from router import limits
from router.config import Price
from router.envelope import usage_json
from router.types import Usage

PLAIN = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
DETAILED = {
    **PLAIN,
    "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 120, "accepted_prediction_tokens": 0},
}


def test_usage_without_details_has_no_cached_or_reasoning_tokens() -> None:
    assert Usage.from_json(PLAIN) == Usage(1000, 500, cached_tokens=0, reasoning_tokens=0)


def test_usage_details_are_read_where_openai_puts_them() -> None:
    usage = Usage.from_json(DETAILED)
    assert usage == Usage(1000, 500, cached_tokens=600, reasoning_tokens=120)
    assert usage is not None and usage.total_tokens == 1500  # details are parts of the two, not more


@pytest.mark.parametrize(
    "details",
    [
        {"prompt_tokens_details": None, "completion_tokens_details": None},
        {"prompt_tokens_details": {}, "completion_tokens_details": {}},
        {"prompt_tokens_details": [600], "completion_tokens_details": "120"},
        {
            "prompt_tokens_details": {"cached_tokens": "600"},
            "completion_tokens_details": {"reasoning_tokens": 1.5},
        },
        {
            "prompt_tokens_details": {"cached_tokens": -3},
            "completion_tokens_details": {"reasoning_tokens": True},
        },
    ],
)
def test_odd_details_read_as_none_reported(details: dict[str, Any]) -> None:
    assert Usage.from_json({**PLAIN, **details}) == Usage(1000, 500)


def test_usage_that_is_not_numbers_is_still_none_whatever_its_details() -> None:
    assert Usage.from_json({**DETAILED, "prompt_tokens": "1000"}) is None
    assert Usage.from_json({"prompt_tokens_details": {"cached_tokens": 5}}) is None
    assert Usage.from_json(None) is None


def test_usage_json_carries_details_only_where_there_are_some() -> None:
    assert usage_json(Usage(1000, 500)) == PLAIN
    detailed = Usage(1000, 500, cached_tokens=600, reasoning_tokens=120)
    assert Usage.from_json(usage_json(detailed)) == detailed


def test_cost_without_a_cached_input_price_prices_cached_tokens_as_input() -> None:
    price = Price(input=2.5, output=10)
    cached = Usage(1000, 500, cached_tokens=600)
    assert limits.cost_nanos(cached, price) == limits.cost_nanos(Usage(1000, 500), price)
    assert limits.cost_nanos(cached, price) == 1000 * 2_500 + 500 * 10_000
    assert limits.cost_nanos(cached, None) == 0


def test_cost_with_a_cached_input_price() -> None:
    price = Price(input=2.5, output=10, cached_input=0.25)
    used = Usage(1000, 500, cached_tokens=600, reasoning_tokens=120)
    # Reasoning tokens are completion tokens: priced as output, not again.
    assert limits.cost_nanos(used, price) == 400 * 2_500 + 600 * 250 + 500 * 10_000
    # No cached tokens: exactly what a price without cached_input gives (the stores' cap uses it).
    for usage in (Usage(1000, 500), Usage(1, 0), Usage(7, 3)):
        assert limits.cost_nanos(usage, price) == limits.cost_nanos(usage, Price(input=2.5, output=10))


def test_cost_is_rounded_up_once_over_the_whole_sum() -> None:
    price = Price(input=0.0004, output=0.0004, cached_input=0.0004)  # 0.4 nanos a token
    assert limits.cost_nanos(Usage(2, 0, cached_tokens=1), price) == 1  # not 1 + 1
    assert limits.cost_nanos(Usage(1, 1, cached_tokens=1), price) == 1
    assert isinstance(limits.cost_nanos(Usage(3, 3, cached_tokens=2), price), int)


def test_more_cached_tokens_than_prompt_tokens_price_no_more_than_the_prompt() -> None:
    price = Price(input=2.5, output=10, cached_input=0.25)
    assert limits.cost_nanos(Usage(100, 0, cached_tokens=900), price) == 100 * 250
    assert limits.cost_nanos(Usage(100, 0, cached_tokens=100), price) == 100 * 250


def test_a_free_cache_costs_nothing_for_the_cached_part() -> None:
    price = Price(input=3, output=15, cached_input=0)
    assert limits.cost_nanos(Usage(1000, 0, cached_tokens=1000), price) == 0
    assert limits.cost_nanos(Usage(1000, 10, cached_tokens=999), price) == 3_000 + 150_000
