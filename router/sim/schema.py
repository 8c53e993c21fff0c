"""Pure: one deterministic instance of a JSON schema, for structured answers and tool arguments.

Covers what pydantic v2's `model_json_schema()` and OpenAI strict schemas produce: types
(single or listed), properties/required/additionalProperties, items/prefixItems with
minItems/maxItems, enum, const, anyOf/oneOf/allOf, $ref into $defs or definitions,
default, string formats and lengths, numeric bounds. A client that validates the answer
against its own schema must succeed, or the demo would show failures router did not cause.

Recursive schemas end: past MINIMAL_DEPTH nesting levels only required properties, minItems
items and null branches are taken; past MAX_DEPTH the answer is null.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MINIMAL_DEPTH = 6
MAX_DEPTH = 40

# Valid-looking values for the formats pydantic emits (EmailStr, AnyUrl, UUID, datetime...).
FORMATS: Mapping[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "sim@example.com",
    "idn-email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "iri": "https://example.com/sim",
    "uri-reference": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


@dataclass(frozen=True)
class _Context:
    root: Any
    text: str
    """Every free string starts from this; the caller makes it name the dialect and model."""
    free_key: str
    """The one key an object with no declared properties gets, if extras are allowed."""


def example(schema: Any, *, text: str = "simulated", free_key: str = "answer") -> Any:
    """An instance of `schema`: every property filled, arrays of one item (or minItems)."""
    return _value(_Context(schema, text, free_key), schema, 0, 0)


def _value(ctx: _Context, node: Any, depth: int, variant: int) -> Any:
    if depth > MAX_DEPTH or node is False:
        return None
    if not isinstance(node, dict):  # `true` or junk: anything goes
        return ctx.text
    if "default" in node:
        return copy.deepcopy(node["default"])
    if "const" in node:
        return copy.deepcopy(node["const"])
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return copy.deepcopy(enum[min(variant, len(enum) - 1)])
    ref = node.get("$ref")
    if isinstance(ref, str):
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _value(ctx, {**_resolve(ctx.root, ref), **siblings}, depth + 1, variant)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and all_of:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _value(ctx, _merge([_deref(ctx.root, p) for p in all_of] + [rest]), depth, variant)
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            rest = {k: v for k, v in node.items() if k != key}
            branch = _branch(ctx, branches, minimal=depth > MINIMAL_DEPTH)
            return _value(ctx, _merge([rest, _deref(ctx.root, branch)]), depth, variant)
    kind = _kind(node, minimal=depth > MINIMAL_DEPTH)
    if kind == "object":
        return _object(ctx, node, depth, variant)
    if kind == "array":
        return _array(ctx, node, depth)
    if kind == "integer" or kind == "number":
        return _number(node, variant, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(ctx, node, variant)


def _resolve(root: Any, ref: str) -> Any:
    """A local JSON pointer (#/$defs/X, #/definitions/X, #); anything else: a free value."""
    if not ref.startswith("#"):
        return {}
    target = root
    for raw in filter(None, ref[1:].split("/")):
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return {}
        target = target[part]
    return target if isinstance(target, dict | bool) else {}


def _deref(root: Any, node: Any) -> Any:
    """The node with a top-level $ref replaced by its target, so allOf parts can merge."""
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 8:
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node, seen = {**_as_dict(_resolve(root, node["$ref"])), **siblings}, seen + 1
    return node


def _as_dict(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {}


def _merge(parts: list[Any]) -> dict[str, Any]:
    """allOf as one schema: properties and required united, other keywords first one wins."""
    merged: dict[str, Any] = {}
    for part in map(_as_dict, parts):
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _branch(ctx: _Context, branches: list[Any], *, minimal: bool) -> Any:
    def is_null(branch: Any) -> bool:
        return isinstance(branch, dict) and _deref(ctx.root, branch).get("type") == "null"

    nulls = [b for b in branches if is_null(b)]
    if minimal and nulls:  # deep in a recursive schema: end it
        return nulls[0]
    others = [b for b in branches if not is_null(b)]
    return (others or branches)[0]


def _kind(node: dict[str, Any], *, minimal: bool) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        names = [k for k in kind if isinstance(k, str)]
        if minimal and "null" in names:
            return "null"
        kind = next((k for k in names if k != "null"), names[0] if names else None)
    if isinstance(kind, str):
        return kind
    if "properties" in node or "additionalProperties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _object(ctx: _Context, node: dict[str, Any], depth: int, variant: int) -> dict[str, Any]:
    properties = _as_dict(node.get("properties"))
    required = [r for r in node.get("required", []) if isinstance(r, str)]
    minimal = depth > MINIMAL_DEPTH
    names = [n for n in properties if not minimal or n in required]
    names += [r for r in required if r not in names]
    extra = node.get("additionalProperties", True)
    result: dict[str, Any] = {}
    for name in names:
        if name in properties:
            result[name] = _value(ctx, properties[name], depth + 1, variant)
        elif extra is not False:  # required but undeclared: it is an extra
            result[name] = _value(ctx, extra, depth + 1, variant)
    if not properties and not minimal and extra is not False:
        # A free-form object (pydantic dict[str, X], or just {"type": "object"}): one entry.
        result.setdefault(ctx.free_key, _value(ctx, extra, depth + 1, variant))
    return result


def _array(ctx: _Context, node: dict[str, Any], depth: int) -> list[Any]:
    prefix = node.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = node.get("items", {})
    low = _int(node.get("minItems"), 0)
    count = max(low, len(prefix)) if depth > MINIMAL_DEPTH else max(low, len(prefix), 1)
    high = node.get("maxItems")
    if isinstance(high, int) and not isinstance(high, bool):
        count = min(count, high)
    if items is False:  # tuples closed after their prefix
        count = min(count, len(prefix))
    return [
        _value(ctx, prefix[i] if i < len(prefix) else items, depth + 1, i) for i in range(count)
    ]  # each item its own variant, so uniqueItems holds


def _number(node: dict[str, Any], variant: int, *, integer: bool) -> int | float:
    low = _bound(node, "minimum", -math.inf)
    high = _bound(node, "maximum", math.inf)
    above = _bound(node, "exclusiveMinimum", -math.inf)
    below = _bound(node, "exclusiveMaximum", math.inf)
    step = _bound(node, "multipleOf", 0.0)
    if integer:
        step = max(1, math.ceil(step))
    floor, ceiling = max(low, above), min(high, below)
    candidates = [1.0 + variant, low, high, above + (step or 1), below - (step or 1), 0.0]
    if math.isfinite(floor) and math.isfinite(ceiling):
        candidates.append((floor + ceiling) / 2)  # between exclusive bounds
    for candidate in filter(math.isfinite, candidates):
        value: int | float = math.ceil(candidate / step) * step if step > 0 else candidate
        if integer:
            value = math.ceil(value)
        if low <= value <= high and above < value < below:
            return value
    return math.ceil(floor) if integer and math.isfinite(floor) else 1  # contradictory bounds


def _bound(node: dict[str, Any], key: str, fallback: float) -> float:
    value = node.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else fallback


def _string(ctx: _Context, node: dict[str, Any], variant: int) -> str:
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in FORMATS:
        return FORMATS[fmt]
    text = ctx.text if variant == 0 else f"{ctx.text} {variant + 1}"
    low = _int(node.get("minLength"), 0)
    while len(text) < low:
        text += " " + (ctx.text or "simulated")
    high = node.get("maxLength")
    if isinstance(high, int) and not isinstance(high, bool):
        text = text[:high]
    return text


def _int(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback
