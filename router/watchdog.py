"""Timeouts that count only the time they should, in place of asyncio.timeout where it does not.

Watchdog: an idle timeout for a loop that waits for data many times, one timer per idle period.
`asyncio.timeout_at` around each wait creates, schedules and cancels a timer handle every
time; relaying a stream of 200 chunks did that 200 times (~5 % of a stream's CPU, measured
with py-spy). The watchdog keeps one timer; each piece of data only notes the time, and when
the timer fires early it re-arms for what is left. Time spent waiting on the client is not idle.

PatientTimeout: a timeout that does not count the time this process itself ran late (see
LoopLag), for calls to a store whose reply may sit unread behind a CPU-bound event loop.

Both cancel the task on expiry, and their context managers turn that cancellation into
TimeoutError, as asyncio.timeout does.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import ClassVar


class _Expiring:
    """What both timers share: on expiry they cancel the task that entered them, and leaving
    them turns that cancellation (theirs, and nobody else's) into TimeoutError."""

    __slots__ = ("_handle", "_task", "expired")

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def _expire(self) -> None:
        self.expired = True
        self._handle = None
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # Ours, and nobody else's (a client leaving cancels the same task).
        if self.expired and kind is asyncio.CancelledError and self._task and self._task.uncancel() == 0:
            raise TimeoutError from exc


class Watchdog(_Expiring):
    __slots__ = ("_armed_at", "_deadline", "_holding", "_idle", "_last", "_loop")

    def __init__(self, *, idle: float, deadline: float):
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._idle = idle
        self._deadline = deadline
        self._last = self._loop.time()
        self._armed_at = 0.0
        self._holding = False

    def fed(self) -> None:
        """Data came: the idle time starts again."""
        self._last = now = self._loop.time()
        self._holding = False
        if self._armed_at > now + self._idle:  # it stood down while holding: count again
            self._rearm()

    def hold(self) -> None:
        """Until the next fed(), only the deadline runs: the wait is on the client (a slow
        reader is not a silent provider, and must not be blamed on one)."""
        self._holding = True

    def wait_at_most(self, idle: float) -> None:
        """From now on, wait `idle` seconds for data (shorter: re-armed at once)."""
        shorter = idle < self._idle
        self._idle = idle
        if shorter:
            self._rearm()

    def _due(self) -> float:
        return min(self._deadline, self._last + self._idle)

    def _arm(self) -> None:
        self._armed_at = self._due()
        self._handle = self._loop.call_at(self._armed_at, self._fire)

    def _rearm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._arm()

    def _fire(self) -> None:
        now = self._loop.time()
        if self._holding and now < self._deadline:  # only the deadline runs while holding
            self._armed_at = self._deadline
            self._handle = self._loop.call_at(self._deadline, self._fire)
        elif now >= self._due():  # the idle time or the deadline, whichever is sooner
            self._expire()
        else:
            self._arm()  # data came since it was armed: wait for what is left

    def __enter__(self) -> Watchdog:
        self._arm()
        return self


class LoopLag:
    """How late this event loop has lately been running its timers: the time a ready callback
    (a reply that arrived, say) waits its turn when the process is CPU-bound. One per loop,
    ticking every TICK once asked for; negligible work."""

    TICK = 0.05
    _of: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag]] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.seconds = 0.0
        self._loop = loop
        self._expected = loop.time() + self.TICK
        loop.call_at(self._expected, self._tick)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopLag:
        lag = cls._of.get(loop)
        if lag is None:
            lag = cls._of[loop] = cls(loop)
        return lag

    def _tick(self) -> None:
        now = self._loop.time()
        # The worst recent lateness, fading by a fifth each tick once the load is gone.
        self.seconds = max(now - self._expected, self.seconds * 0.8)
        self._expected = now + self.TICK
        self._loop.call_at(self._expected, self._tick)


class PatientTimeout(_Expiring):
    """A timeout that does not count the time this process itself ran late.

    When the timer fires late, or the loop has lately been running late, this process was
    busy (CPU-bound under load) and the answer awaited may be sitting unread behind the
    callbacks ahead of it: the timer waits one more `timeout` instead of cancelling, up to
    `cap` in all. Otherwise it cancels the task, and the context manager raises TimeoutError,
    as asyncio.timeout does.
    """

    __slots__ = ("_cap", "_expected", "_lag", "_loop", "_timeout")

    LATE = 0.02
    """Seconds past its time after which a timer counts as having fired late."""

    def __init__(self, timeout: float, *, cap: float):
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._lag = LoopLag.of(self._loop)
        self._timeout = timeout
        now = self._loop.time()
        self._cap = now + cap
        self._expected = now + timeout

    def _fire(self) -> None:
        now = self._loop.time()
        busy = now - self._expected > self.LATE or self._lag.seconds > self.LATE
        if busy and now < self._cap:
            self._expected = min(self._cap, now + self._timeout)
            self._handle = self._loop.call_at(self._expected, self._fire)
            return
        self._expire()

    def __enter__(self) -> PatientTimeout:
        self._handle = self._loop.call_at(self._expected, self._fire)
        return self
