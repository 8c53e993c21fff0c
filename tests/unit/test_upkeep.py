"""ledger.Upkeep: when the keeper renews and when it sweeps for dead replicas' requests.

A sweep that came too soon after an outage would take the live requests of replicas that had
not yet renewed (their intents ran out by Redis's clock while it was away) for lost, and
their real settlements would then find the key done: these pin the schedule that prevents it.
"""

from __future__ import annotations

from router.ledger import Upkeep

LEASE = 30.0


def ticks(
    schedule: Upkeep, start: float, end: float, *, down: bool = False
) -> list[tuple[float, bool, bool]]:
    """Every one-second tick in [start, end): (time, renew, sweep)."""
    found = []
    now = start
    while now < end:
        found.append((now, *schedule.due(now, down=down)))
        now += 1.0
    return found


def test_renewals_come_every_third_of_a_lease() -> None:
    schedule = Upkeep(LEASE, now=0.0)
    renewed = [t for t, renew, _ in ticks(schedule, 1.0, 41.0) if renew]
    assert renewed == [10.0, 20.0, 30.0, 40.0]


def test_a_process_that_just_started_sweeps_only_after_a_lease() -> None:
    schedule = Upkeep(LEASE, now=0.0)
    swept = [t for t, _, sweep in ticks(schedule, 1.0, 61.0) if sweep]
    assert swept[0] == LEASE and swept == [30.0, 40.0, 50.0, 60.0]


def test_after_an_outage_renewal_is_at_once_and_the_sweep_a_lease_later() -> None:
    schedule = Upkeep(LEASE, now=0.0)
    ticks(schedule, 1.0, 100.0)
    during = ticks(schedule, 100.0, 160.0, down=True)  # longer than a lease: every intent ran out
    assert not any(sweep for _, _, sweep in during)
    back = ticks(schedule, 160.0, 200.0)
    assert back[0] == (160.0, True, False)  # renewed on the first tick the store answers
    swept = [t for t, _, sweep in back if sweep]
    assert swept[0] == 159.0 + LEASE  # a lease after the store was last seen down


def test_a_blip_shorter_than_a_tick_still_holds_the_sweep_back() -> None:
    schedule = Upkeep(LEASE, now=0.0)
    ticks(schedule, 1.0, 55.0)
    assert schedule.due(55.0, down=True) == (False, False)
    assert schedule.due(56.0, down=False) == (True, False)  # back: renewed at once
    assert not any(sweep for _, _, sweep in ticks(schedule, 57.0, 85.0))
    assert schedule.due(85.0, down=False)[1]
