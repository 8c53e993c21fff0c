"""Pure: the small checks every endpoint's request translation makes of a client's values."""

from __future__ import annotations

from typing import Any, NoReturn, TypeGuard

from ..errors import InvalidRequest


def fail(param: str, message: str) -> NoReturn:
    """The client's 400, naming the parameter (a dotted path: `input[2].content`)."""
    raise InvalidRequest(message, param=param)


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, and not a boolean (`True == 1` in Python, not in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
