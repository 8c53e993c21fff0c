"""The simulators' schema instances validate against their schemas, pydantic's and OpenAI strict ones."""

from __future__ import annotations

import datetime
import enum
import ipaddress
import uuid
from typing import Any, Literal

import jsonschema
import orjson
import pytest
from pydantic import AnyUrl, BaseModel, Field

from router.sim.schema import example


def valid(schema: dict[str, Any], instance: Any) -> None:
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "number"},
    {"type": "integer"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["null", "integer"]},
    {"type": "object"},
    {"type": "object", "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "minProperties": 1},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 4, "uniqueItems": True},
    {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    {"enum": ["x", "y", 3]},
    {"const": {"k": [1, 2]}},
    {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 4}]},
    {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string", "format": "email"}]},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"required": ["b"]},
        ]
    },
    {"type": "string", "default": "given"},
    {"type": "string", "minLength": 40, "maxLength": 45},
    {"type": "string", "maxLength": 3},
    {"type": "integer", "minimum": 10, "maximum": 12},
    {"type": "integer", "exclusiveMinimum": 100, "multipleOf": 7},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
    {"type": "number", "maximum": -3},
    {"type": "integer", "minimum": -10, "maximum": -5},
    *[
        {"type": "string", "format": f}
        for f in ("date-time", "date", "time", "email", "uri", "uuid", "ipv4", "ipv6")
    ],
    {"$defs": {"A": {"type": "integer", "minimum": 3}}, "$ref": "#/$defs/A"},
    {
        "definitions": {"A": {"type": "string", "enum": ["z"]}},
        "type": "array",
        "items": {"$ref": "#/definitions/A"},
    },
    # recursive: a linked list whose tail is required (strict mode style: nullable instead of optional)
    {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["v", "next"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    },
    # recursion through the root
    {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: orjson.dumps(s).decode()[:60])
def test_the_instance_is_valid(schema: dict[str, Any]) -> None:
    instance = example(schema)
    valid(schema, instance)
    orjson.dumps(instance)  # and it is JSON


def test_every_property_is_filled_and_no_extras_when_closed() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert example(schema, text="hi") == {"a": "hi", "b": 1}


def test_defaults_and_enums_are_taken_as_given() -> None:
    assert example({"type": "integer", "default": 5}) == 5
    assert example({"type": "object", "properties": {"a": {"type": "string", "default": "x"}}}) == {"a": "x"}
    assert example({"type": "string", "enum": ["b", "a"]}) == "b"


def test_strings_carry_the_given_text_and_free_objects_one_key() -> None:
    assert example({"type": "object"}, text="from trinity") == {"answer": "from trinity"}
    assert example({"type": "object"}, free_key="query") == {"query": "simulated"}


def test_formats_look_real() -> None:
    datetime.datetime.fromisoformat(example({"type": "string", "format": "date-time"}))
    datetime.date.fromisoformat(example({"type": "string", "format": "date"}))
    datetime.time.fromisoformat(example({"type": "string", "format": "time"}))
    uuid.UUID(example({"type": "string", "format": "uuid"}))
    ipaddress.ip_address(example({"type": "string", "format": "ipv6"}))
    assert "@" in example({"type": "string", "format": "email"})
    assert example({"type": "string", "format": "uri"}).startswith("https://")


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    weight: float = Field(gt=0, lt=0.5)


class Node(BaseModel):
    name: str = Field(min_length=20, max_length=40)
    children: list[Node] = []
    next: Node | None


class Step(BaseModel):
    explanation: str
    output: str


class Everything(BaseModel):
    when: datetime.datetime
    day: datetime.date
    id: uuid.UUID
    url: AnyUrl
    colour: Colour
    tags: list[str] = Field(min_length=2, max_length=3)
    pet: Cat | Dog = Field(discriminator="kind")
    pair: tuple[int, str]
    scores: dict[str, int]
    tree: Node
    anything: Any
    maybe: int | None
    count: int = Field(multiple_of=7, gt=10)
    steps: list[Step]
    ratio: float = 0.5


def test_a_pydantic_models_schema_round_trips() -> None:
    schema = Everything.model_json_schema()
    content = orjson.dumps(example(schema, text="a simulated answer from real200 (gpt-4o)."))
    parsed = Everything.model_validate_json(content)
    valid(schema, orjson.loads(content))
    assert parsed.steps[0].explanation == "a simulated answer from real200 (gpt-4o)."
    assert parsed.tree.next is not None  # optional-but-required recursion is followed, then ended
    assert parsed.ratio == 0.5  # the default


def test_the_documents_strict_schema() -> None:
    # aggregator-structured-output.md's example, verbatim
    schema = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                },
            },
            "final_answer": {"type": "string"},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    }
    instance = example(schema)
    valid(schema, instance)
    assert set(instance) == {"steps", "final_answer"} and instance["steps"]
