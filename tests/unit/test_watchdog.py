"""The stream's idle timer: one timer, re-armed only when it fires early."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.watchdog import Watchdog


async def test_silence_longer_than_idle_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError), Watchdog(idle=0.1, deadline=asyncio.get_running_loop().time() + 10):
        await asyncio.sleep(5)
    assert 0.09 <= time.monotonic() - started < 2


async def test_data_keeps_it_alive_past_many_idle_periods() -> None:
    loop = asyncio.get_running_loop()
    with Watchdog(idle=0.1, deadline=loop.time() + 10) as watch:
        for _ in range(10):  # 0.5 s in all, never 0.1 s without data
            await asyncio.sleep(0.05)
            watch.fed()
    assert not watch.expired


async def test_the_deadline_holds_however_often_data_comes() -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(TimeoutError), Watchdog(idle=5, deadline=loop.time() + 0.2) as watch:
        while True:
            await asyncio.sleep(0.02)
            watch.fed()
    assert time.monotonic() - started < 2


async def test_a_shorter_wait_applies_at_once() -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(TimeoutError), Watchdog(idle=10, deadline=loop.time() + 10) as watch:
        watch.wait_at_most(0.1)
        await asyncio.sleep(5)
    assert time.monotonic() - started < 2


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    async def relay() -> None:
        with Watchdog(idle=10, deadline=asyncio.get_running_loop().time() + 10):
            await asyncio.sleep(5)

    task = asyncio.create_task(relay())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_waiting_on_the_client_is_never_the_providers_silence() -> None:
    loop = asyncio.get_running_loop()
    with Watchdog(idle=0.1, deadline=loop.time() + 10) as watch:
        watch.hold()  # a send() blocked on a slow client, three idle periods long
        await asyncio.sleep(0.3)
        watch.fed()
    assert not watch.expired
    started = time.monotonic()
    with pytest.raises(TimeoutError), Watchdog(idle=0.1, deadline=loop.time() + 10) as watch:
        watch.hold()
        await asyncio.sleep(0.3)
        watch.fed()  # the provider's silence counts again from here
        await asyncio.sleep(5)
    assert 0.35 <= time.monotonic() - started < 2


async def test_the_deadline_still_holds_while_waiting_on_the_client() -> None:
    # A client that stays connected but stops reading blocks send() for good: the request's
    # deadline must still end it.
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(TimeoutError), Watchdog(idle=0.05, deadline=loop.time() + 0.3) as watch:
        watch.hold()
        await asyncio.sleep(5)
    assert 0.25 <= time.monotonic() - started < 2


async def test_a_patient_timeout_fired_on_time_times_out() -> None:
    from router.watchdog import PatientTimeout

    started = time.monotonic()
    with pytest.raises(TimeoutError), PatientTimeout(0.05, cap=1.0):
        await asyncio.sleep(5)
    assert time.monotonic() - started < 0.5


async def test_an_answer_ready_while_the_loop_was_busy_is_not_timed_out() -> None:
    # The pathology it exists for: a reply arrives in time, but this process is CPU-bound and
    # its timer runs before the reply is read; asyncio.timeout would cancel the waiter.
    from router.watchdog import PatientTimeout

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    with PatientTimeout(0.05, cap=1.0):
        loop.call_later(0.01, time.sleep, 0.2)  # busy past the deadline
        loop.call_later(0.02, answer.set_result, "reply")  # ready in time, behind the busy stretch
        assert await answer == "reply"


async def test_a_patient_timeout_stops_at_its_cap_however_late_the_loop_runs() -> None:
    from router.watchdog import PatientTimeout

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(TimeoutError), PatientTimeout(0.05, cap=0.4):
        for _ in range(20):  # always busy when the timer is due
            loop.call_soon(time.sleep, 0.06)
            await asyncio.sleep(0.06)
    assert time.monotonic() - started < 1.0
