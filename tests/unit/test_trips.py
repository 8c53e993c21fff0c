"""Shared round trips (state/trips.py): who goes at once, who waits, and what each caller gets.

The wire is a stand-in that records each write and answers when the test says so. Against a
real Redis: test_calls_made_together_are_each_answered_as_if_alone (integration/test_store_contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from router.state.base import StateError
from router.state.trips import Commands, RoundTrips


class Wire:
    """Each write is kept with a future the test resolves: the round trip's replies."""

    def __init__(self) -> None:
        self.writes: list[list[tuple[Any, ...]]] = []
        self._replies: list[asyncio.Future[None]] = []

    async def send(self, commands: Commands) -> list[Any]:
        self.writes.append(list(commands))
        done = asyncio.get_running_loop().create_future()
        self._replies.append(done)
        await done
        return [("reply", *command) for command in commands]

    def answer(self, n: int) -> None:
        self._replies[n].set_result(None)

    def fail(self, n: int, error: Exception) -> None:
        self._replies[n].set_exception(error)


async def unbounded(work: Coroutine[Any, Any, list[Any]]) -> list[Any]:
    return await work


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_calls_go_out_at_once_until_the_limit_then_the_queue_leaves_as_one_write() -> None:
    wire = Wire()
    trips = RoundTrips(wire.send, at_once=2, bounded=unbounded)
    calls = [asyncio.create_task(trips.run([("cmd", n)])) for n in range(5)]
    await settle()
    assert wire.writes == [[("cmd", 0)], [("cmd", 1)]]  # two in flight; 2, 3 and 4 queue
    wire.answer(0)
    await settle()
    assert wire.writes[2] == [("cmd", 2), ("cmd", 3), ("cmd", 4)]  # in the order they were made
    wire.answer(1)
    wire.answer(2)
    replies = await asyncio.gather(*calls)
    assert replies == [[("reply", "cmd", n)] for n in range(5)]  # each caller gets its own


async def test_a_lone_call_never_waits() -> None:
    wire = Wire()
    trips = RoundTrips(wire.send, at_once=1, bounded=unbounded)
    for n in range(3):
        call = asyncio.create_task(trips.run([("a", n), ("b", n)]))
        await settle()
        assert len(wire.writes) == n + 1  # sent before anything answered
        wire.answer(n)
        assert await call == [("reply", "a", n), ("reply", "b", n)]


async def test_a_failed_shared_round_trip_fails_each_of_its_callers() -> None:
    wire = Wire()
    trips = RoundTrips(wire.send, at_once=1, bounded=unbounded)
    first = asyncio.create_task(trips.run([("x",)]))
    queued = [asyncio.create_task(trips.run([("y", n)])) for n in range(2)]
    await settle()
    wire.answer(0)
    await settle()
    wire.fail(1, StateError("ConnectionError: gone"))
    assert await first == [("reply", "x")]
    errors = []
    for call in queued:
        with pytest.raises(StateError, match="gone") as error:
            await call
        errors.append(error.value)
    assert errors[0] is not errors[1]  # one each: a shared one would carry each caller's traceback
    after = asyncio.create_task(trips.run([("z",)]))  # and the next call goes out again
    await settle()
    wire.answer(2)
    assert await after == [("reply", "z")]


async def test_a_caller_that_gave_up_in_the_queue_is_not_sent() -> None:
    wire = Wire()
    trips = RoundTrips(wire.send, at_once=1, bounded=unbounded)
    first = asyncio.create_task(trips.run([("first",)]))
    await settle()
    gave_up = asyncio.create_task(trips.run([("gave up",)]))
    kept = asyncio.create_task(trips.run([("kept",)]))
    await settle()
    gave_up.cancel()
    await settle()
    wire.answer(0)
    await settle()
    assert wire.writes[1] == [("kept",)]
    wire.answer(1)
    assert await first == [("reply", "first")] and await kept == [("reply", "kept")]


async def test_the_shared_round_trip_has_its_own_time_limit() -> None:
    wire = Wire()

    async def within_a_tenth(work: Coroutine[Any, Any, list[Any]]) -> list[Any]:
        try:
            async with asyncio.timeout(0.1):
                return await work
        except TimeoutError:
            raise StateError("TimeoutError") from None

    trips = RoundTrips(wire.send, at_once=1, bounded=within_a_tenth)
    first = asyncio.create_task(trips.run([("first",)]))
    queued = asyncio.create_task(trips.run([("queued",)]))
    await settle()
    wire.answer(0)
    assert await first == [("reply", "first")]
    with pytest.raises(StateError, match="TimeoutError"):  # its write is never answered
        await asyncio.wait_for(queued, 5)


async def test_a_call_made_while_a_queue_waits_to_leave_joins_it_rather_than_overtaking() -> None:
    wire = Wire()
    trips = RoundTrips(wire.send, at_once=2, bounded=unbounded)
    flying = [asyncio.create_task(trips.run([("flying", n)])) for n in range(2)]
    await settle()
    queued = asyncio.create_task(trips.run([("queued",)]))
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def later_call() -> list[Any]:
        await gate
        return await trips.run([("later",)])

    later = asyncio.create_task(later_call())
    await settle()
    wire.answer(0)  # a slot frees: a flush for the queue is started...
    wire.answer(1)  # ...a second slot frees...
    gate.set_result(None)  # ...and a call is made, all before that flush has run
    await settle()
    assert wire.writes[2:] == [[("queued",), ("later",)]]  # in order, in one write
    wire.answer(2)
    assert await queued == [("reply", "queued")] and await later == [("reply", "later")]
    await asyncio.gather(*flying)


async def test_time_spent_queued_does_not_count_against_the_round_trip() -> None:
    wire = Wire()

    async def within_a_second(work: Coroutine[Any, Any, list[Any]]) -> list[Any]:
        try:
            async with asyncio.timeout(1.0):
                return await work
        except TimeoutError:
            raise StateError("TimeoutError") from None

    trips = RoundTrips(wire.send, at_once=1, bounded=within_a_second)
    first = asyncio.create_task(trips.run([("first",)]))
    queued = asyncio.create_task(trips.run([("queued",)]))
    await asyncio.sleep(0.6)
    wire.answer(0)
    await asyncio.sleep(0.6)  # 1.2 s since it was made, 0.6 s since it was sent
    wire.answer(1)
    assert await first == [("reply", "first")] and await queued == [("reply", "queued")]
