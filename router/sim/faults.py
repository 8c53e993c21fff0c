"""Fault injection for the simulators: the spec language and which fault a request gets.

    SPEC  := FAULT (';' FAULT)*
    FAULT := KIND ['=' VALUE] (',' OPTION '=' VALUE)*

    status=CODE        answer with that HTTP status in the dialect's error shape
                       (options: retry_after=SECONDS, code=CODE, message=TEXT, location=URL)
    reset              reset the connection before any response
    silent             read the request, never answer
    slow_first_token=DURATION   wait that long before the first content (before the
                       answer, when not streaming)
    cut=N              stream: close the connection after N content chunks (0: right after
                       the role chunk); not streaming: close half-way through the body
    stall=N            stream: stop sending after N content chunks (0: right after the role
                       chunk), keep the connection
    malformed=N        stream: content chunk N (from 1) is broken JSON
    stream_error=N     stream: after N content chunks (0: before any), an error event, then
                       the end (options: code=CODE, message=TEXT)
    no_done            stream: finish without `data: [DONE]` (no_done=hold: and keep
                       the connection open)

    options on any fault: times=N (only the next N requests), after=N (let N pass first)
    echo_auth          on status and stream_error: the error message quotes the request's
                       Authorization (and X-Api-Key, if sent), as a careless provider does

Instance faults are checked in order, first active one wins; a request can carry its
own fault in the `X-Sim-Fault` header or a `sim_fault` body field, which wins over them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..config import expand

KINDS = (
    "status",
    "reset",
    "silent",
    "slow_first_token",
    "cut",
    "stall",
    "malformed",
    "stream_error",
    "no_done",
)
_OPTIONS = ("retry_after", "code", "message", "location", "times", "after", "echo_auth")


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    kind: str
    value: str = ""
    retry_after: str | None = None
    code: str | None = None
    message: str | None = None
    location: str | None = None
    times: int | None = None
    after: int = 0
    echo_auth: bool = False

    @property
    def number(self) -> int:
        return int(self.value) if self.value.isdigit() else 0

    @property
    def seconds(self) -> float:
        return parse_duration(self.value)


def parse_duration(text: str) -> float:
    seconds = expand.parse_duration(text)
    if seconds is None:
        raise FaultSpecError(f"not a duration: {text!r} (use 250ms, 2s)")
    return seconds


def parse(spec: str) -> list[Fault]:
    faults: list[Fault] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        head, *options = [o.strip() for o in part.split(",")]
        kind, _, value = head.partition("=")
        if kind not in KINDS:
            raise FaultSpecError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
        fault = Fault(kind=kind, value=value)
        for option in options:
            name, _, text = option.partition("=")
            if name not in _OPTIONS:
                raise FaultSpecError(f"unknown fault option {name!r}; known: {', '.join(_OPTIONS)}")
            if name in ("times", "after"):
                if not text.isdigit():
                    raise FaultSpecError(f"{name} takes a whole number, got {text!r}")
                setattr(fault, name, int(text))
            elif name == "echo_auth":
                if text:
                    raise FaultSpecError(f"echo_auth takes no value, got {text!r}")
                fault.echo_auth = True
            else:
                setattr(fault, name, text)
        _check(fault)
        faults.append(fault)
    return faults


def _check(fault: Fault) -> None:
    if fault.kind == "status" and not (fault.value.isdigit() and 100 <= int(fault.value) <= 599):
        raise FaultSpecError(f"status takes an HTTP status, got {fault.value!r}")
    if fault.kind in ("cut", "stall", "malformed", "stream_error") and not fault.value.isdigit():
        raise FaultSpecError(f"{fault.kind} takes a chunk count, got {fault.value!r}")
    if fault.kind == "slow_first_token":
        parse_duration(fault.value)


class FaultPlan:
    """The instance's faults; thread-safe, since tests change them from another thread."""

    def __init__(self, spec: str = ""):
        self._lock = threading.Lock()
        self._faults = parse(spec)
        self._seen = 0

    def set(self, spec: str) -> None:
        faults = parse(spec)
        with self._lock:
            self._faults, self._seen = faults, 0

    def next(self) -> Fault | None:
        """The fault for the next request, counting it against `times` and `after`."""
        with self._lock:
            self._seen += 1
            for fault in self._faults:
                if self._seen <= fault.after:
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
            return None
