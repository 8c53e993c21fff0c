from __future__ import annotations

import pytest

from router.sim.faults import FaultPlan, FaultSpecError, parse


def test_spec_parsing() -> None:
    faults = parse("status=429,retry_after=2,times=3; cut=4 ;slow_first_token=250ms,after=1")
    assert [(f.kind, f.value) for f in faults] == [
        ("status", "429"),
        ("cut", "4"),
        ("slow_first_token", "250ms"),
    ]
    assert faults[0].retry_after == "2" and faults[0].times == 3
    assert faults[2].seconds == 0.25 and faults[2].after == 1
    assert parse("") == []


@pytest.mark.parametrize(
    "spec",
    [
        "explode",
        "status=abc",
        "cut",
        "status=500,colour=red",
        "times=x",
        "slow_first_token=soon",
        "status=500,times=two",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse(spec)


def test_times_and_after() -> None:
    plan = FaultPlan("status=500,times=2;reset,after=3")
    kinds = [getattr(plan.next(), "kind", None) for _ in range(6)]
    assert kinds == ["status", "status", None, "reset", "reset", "reset"]
    plan.set("")
    assert plan.next() is None
