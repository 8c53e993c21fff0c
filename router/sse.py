"""Pure: split server-sent-event bytes into events, peek into them cheaply, render events.

Events are passed on as the provider's bytes. Only an event whose bytes may hold what the
router needs (usage, a finish reason, an error) is looked at more closely, so a stream of
content chunks costs a byte search per event, not a JSON parse.
"""

from __future__ import annotations

import re

DONE_EVENT = b"data: [DONE]\n\n"

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"[^"]')  # "" is what some gateways send for "not yet"
_ERROR = re.compile(rb'\s*\{\s*"error"\s*:')


class EventSplitter:
    """Feed bytes as they arrive; get back each complete event (ending in a blank line)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._pending + data if self._pending else data
        if b"\r" in buf:
            buf = _normalize_newlines(buf)
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._pending = buf
            return []
        self._pending = buf[end + 2 :]
        complete = buf[: end + 2]
        if complete.find(b"\n\n") == end and complete[0] != 10:  # one event: the common case
            return [complete]
        return [e.strip(b"\n") + b"\n\n" for e in complete[:-2].split(b"\n\n") if e.strip(b"\n")]

    def flush(self) -> bytes | None:
        """At end of stream: the last event if it lacked its blank line, else None."""
        # At the end a held-back CR can no longer start a CRLF: it ends a line.
        rest = self._pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")
        self._pending = b""
        return rest + b"\n\n" if rest else None


def _normalize_newlines(buf: bytes) -> bytes:
    # SSE allows CRLF and lone CR line endings. A trailing CR may be the first half of a
    # CRLF split across reads, and would become a false blank line if converted now.
    tail = b""
    if buf.endswith(b"\r"):
        buf, tail = buf[:-1], b"\r"
    return buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail


def data_of(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined), or None for a comment or a data-less event."""
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


def is_done(data: bytes) -> bool:
    return data.strip() == b"[DONE]"


def is_error(event: bytes, data: bytes) -> bool:
    """An error reported inside the stream: an `error` object, or an `event: error` event."""
    return _ERROR.match(data) is not None or event.startswith(b"event: error") or b"\nevent: error" in event


# Called for every chunk of every stream: a substring test (memchr-fast) rules most chunks
# out before a regex scans them, and the usual unpadded chunk is judged without a copy.


def may_hold_usage(data: bytes) -> bool:
    return b'"usage"' in data and _USAGE.search(data) is not None


def may_finish(data: bytes) -> bool:
    return b'"finish_reason"' in data and _FINISH.search(data) is not None


def looks_like_json_object(data: bytes) -> bool:
    if data[:1] == b"{" and data[-1:] == b"}":
        return True
    stripped = data.strip()
    return stripped[:1] == b"{" and stripped[-1:] == b"}"


def data_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
