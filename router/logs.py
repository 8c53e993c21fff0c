"""Logs as JSON lines on stderr: one per request (router.access) and structured lines for
breaker changes, reloads and shared-state trouble.

What goes in a line is chosen field by field: ids, names from the config, numbers. Never a
prompt, a completion or a key — there is no field that could carry one.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

ACCESS = logging.getLogger("router.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup(*, level: int = logging.INFO) -> None:
    """JSON lines on stderr for router's loggers and uvicorn's; other libraries only warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("router").setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """A structured line: `msg` says what happened, `fields` the facts (names and numbers only)."""
    logger.log(level, msg, extra={"fields": fields})


def utc_iso(epoch: float) -> str:
    """2026-11-22T08:00:00.123Z: log lines and settlement records."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
