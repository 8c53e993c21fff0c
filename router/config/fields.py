"""Typed readers for config values: each checks one value and records a problem with its YAML path.

A reader never raises on bad input. It records `"<path>: <what is wrong>"` and returns the
default, so one run reports every problem in the file, not just the first.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from typing import Any, TypeVar

from .expand import parse_duration
from .model import ON_EXCEED, PERIODS, Allowance, Limits

N = TypeVar("N", int, float)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._paths: set[str] = set()

    def add(self, path: str, message: str) -> None:
        # One line per problem: an unset ${VAR} also leaves its value empty, say it once.
        if path not in self._paths:
            self._paths.add(path)
            self.lines.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.lines)

    # -- structure -------------------------------------------------------------

    def mapping(
        self, raw: Any, path: str, keys: Collection[str], *, required: Collection[str] = ()
    ) -> dict[str, Any]:
        """A mapping whose keys must be among `keys`; {} when absent or wrong."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.add(path, f"expected a mapping, got {_kind(raw)}")
            return {}
        for key in raw:
            if str(key) not in keys:
                self.add(_join(path, key), "unknown key" + _suggest(str(key), keys))
        for key in required:
            if key not in raw:
                self.add(_join(path, key), "required")
        return {str(k): v for k, v in raw.items() if str(k) in keys}

    def entries(self, raw: Any, path: str) -> dict[str, Any]:
        """A mapping of user-chosen names (providers, models); {} when absent or wrong."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add(path, f"expected a mapping, got {_kind(raw)}")
            return {}
        return {str(k): v for k, v in raw.items()}

    def items(self, raw: Any, path: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.add(path, f"expected a list, got {_kind(raw)}")
            return []
        return raw

    # -- scalars ---------------------------------------------------------------

    def string(self, raw: Any, path: str, default: str = "", *, empty_ok: bool = True) -> str:
        if raw is None:
            return default
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            self.add(path, f"expected a string, got {_kind(raw)}")
            return default
        value = str(raw)
        if not value and not empty_ok:
            self.add(path, "must not be empty")
        return value

    def integer(
        self, raw: Any, path: str, default: int, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        if raw is None:
            return default
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            value = int(raw)  # from ${VAR} expansion
        if value is None:
            self.add(path, f"expected a whole number, got {_show(raw)}")
            return default
        return self._bounded(value, path, default, lo, hi)

    def number(
        self, raw: Any, path: str, default: float, *, lo: float | None = None, hi: float | None = None
    ) -> float:
        if raw is None:
            return default
        value: float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                value = None
        if value is None or not math.isfinite(value):
            self.add(path, f"expected a number, got {_show(raw)}")
            return default
        return self._bounded(value, path, default, lo, hi)

    def boolean(self, raw: Any, path: str, default: bool) -> bool:
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        self.add(path, f"expected true or false, got {_show(raw)}")
        return default

    def duration(self, raw: Any, path: str, default: float) -> float:
        if raw is None:
            return default
        seconds = parse_duration(raw) if isinstance(raw, str) else None
        if seconds is None:
            self.add(path, f"expected a duration like 250ms, 5s or 2m, got {_show(raw)}")
            return default
        if seconds <= 0:
            self.add(path, "must be longer than zero")
            return default
        return seconds

    def choice(self, raw: Any, path: str, default: str, choices: Collection[str]) -> str:
        if raw is None:
            return default
        if raw not in choices:
            self.add(path, f"expected one of {', '.join(choices)}, got {_show(raw)}")
            return default
        return str(raw)

    def strings(self, raw: Any, path: str) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(self.items(raw, path)):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.add(f"{path}[{i}]", f"expected a non-empty string, got {_show(item)}")
        return out

    # -- shapes shared by sections ---------------------------------------------------------

    def name(self, value: str, path: str, what: str) -> None:
        """Names end up in labels, records and logs: keep them plain."""
        if not _NAME.match(value):
            self.add(path, f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")

    def limits(self, raw: Any, path: str) -> Limits:
        m = self.mapping(raw, path, ("rpm", "tpm", "concurrency"))
        return Limits(
            **{
                k: self.integer(m.get(k), f"{path}.{k}", 0, lo=1) or None
                for k in ("rpm", "tpm", "concurrency")
            }
        )

    def allowance(self, raw: Any, path: str) -> Allowance | None:
        """A budget or quota: tokens or cost per period; a client's budget (`….budget`) also
        says what a request that needs more than is left gets (`on_exceed`)."""
        if raw is None:
            return None
        budget = path.endswith(".budget")
        m = self.mapping(
            raw, path, ("tokens", "cost", "per", "on_exceed") if budget else ("tokens", "cost", "per")
        )
        tokens = self.integer(m.get("tokens"), f"{path}.tokens", 0, lo=1) or None
        cost = self.number(m.get("cost"), f"{path}.cost", 0.0, lo=0.0) or None
        if (tokens is None) == (cost is None) and m:
            self.add(path, "give exactly one of tokens or cost")
        return Allowance(
            per=self.choice(m.get("per"), f"{path}.per", "month", PERIODS),
            tokens=tokens,
            cost=cost,
            on_exceed=self.choice(m.get("on_exceed"), f"{path}.on_exceed", "refuse", ON_EXCEED),
        )

    def _bounded(self, value: N, path: str, default: N, lo: float | None, hi: float | None) -> N:
        if lo is not None and value < lo:
            self.add(path, f"must be at least {lo}, got {value}")
            return default
        if hi is not None and value > hi:
            self.add(path, f"must be at most {hi}, got {value}")
            return default
        return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(raw: Any) -> str:
    if raw is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(raw), "a number")


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(key: str, keys: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(sorted(keys))})"
