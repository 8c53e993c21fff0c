"""What an attempt hands back to the request's loop: an attempt ready to go (Started), and
the one that answered (Outcome)."""

from __future__ import annotations

from dataclasses import dataclass

from .attempt import Committed, Whole
from .config import Target
from .errors import UpstreamError
from .health import KeyUse
from .types import JSON


@dataclass(slots=True)
class Started:
    """An attempt ready to go: its target's key reserved and its health lease taken."""

    lease: KeyUse
    body: JSON
    """The request translated for the target."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The attempt that answered: its target, and what it answered with."""

    target: Target
    answer: Whole | Committed
    lease: KeyUse | None
    """A committed stream's hold on its key, until the stream ends (stream_ended)."""

    def stream_ended(self, how: str, error: UpstreamError | None) -> None:
        """What the end of a committed stream says about its key."""
        lease = self.lease
        if lease is None:
            return
        if how == "completed":
            lease.succeeded()
        elif error is not None:  # cut, stalled, broken or refused after the commit point
            lease.record(error)
        lease.end()  # a client that left says nothing about the key
