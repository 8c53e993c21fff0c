"""`${VAR}` / `${VAR:-default}` expansion over a parsed YAML tree, and durations.

Expansion happens after YAML parsing, so a variable's value is never parsed as YAML:
a key containing `: ` or `#` stays one string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def expand(tree: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """Expand variables in every string of `tree`.

    Returns the new tree and the (yaml path, variable) pairs that were unset with no
    default; those expand to "" so later checks still see the rest of the file.
    `${VAR:-default}` uses the default when VAR is unset or empty, as in the shell.
    """
    missing: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            return _VAR.sub(lambda m: _lookup(m, where), node) if "${" in node else node
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    def _lookup(match: re.Match[str], where: str) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is None:
            missing.append((where, name))
        return ""

    return walk(tree, path), missing


def parse_duration(text: str) -> float | None:
    """'250ms' / '5s' / '2m' / '1h' / '7d' -> seconds; None if it is not a duration."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
