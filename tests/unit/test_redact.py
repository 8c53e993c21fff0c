"""The redactor (redact.py) and its one boundary, classify.read_answer."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from router.classify import read_answer
from router.redact import NOTHING, REDACTED, Redactor, is_credential_header

PACKAGE = Path(__file__).resolve().parents[2] / "router"


def test_every_secret_is_replaced_the_longer_first() -> None:
    redact = Redactor(["sk-abcdefgh", "sk-abcdefgh-1234", "a+b.c*d?e(f)"])
    assert redact("key sk-abcdefgh-1234 and sk-abcdefgh.") == f"key {REDACTED} and {REDACTED}."
    assert redact("Bearer a+b.c*d?e(f)") == f"Bearer {REDACTED}"  # literally, not as a pattern
    assert redact("nothing here") == "nothing here"


def test_a_short_key_is_replaced_only_as_a_whole_token() -> None:
    redact = Redactor(["abc12"])
    assert redact("Bearer abc12, key=abc12") == f"Bearer {REDACTED}, key={REDACTED}"
    assert redact("xabc12y abc123 abc12-x") == "xabc12y abc123 abc12-x"


def test_without_secrets_text_is_returned_as_it_is() -> None:
    text = "some provider text"
    assert NOTHING(text) is text
    assert not NOTHING
    assert Redactor(["", ""])(text) is text


def test_a_forwarded_credential_adds_its_value_and_its_token() -> None:
    base = Redactor(["provider-key-0001"])
    more = base.plus(["Bearer client-token-9999"])
    assert more("Bearer client-token-9999 / client-token-9999 / provider-key-0001") == (
        f"{REDACTED} / {REDACTED} / {REDACTED}"
    )
    assert base.plus(["provider-key-0001"]) is base


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("X-Api-Key", True),
        ("api-key", True),
        ("X-Auth-Token", True),
        ("X-Idempotency-Key", False),
        ("X-Request-Id", False),
        ("X-Conversation-Id", False),
    ],
)
def test_credential_header_names(name: str, credential: bool) -> None:
    assert is_credential_header(name) is credential


def test_read_answer_redacts_every_string_it_keeps() -> None:
    redact = Redactor(["sk-secret-key-1"])
    body = {
        "error": {"message": "bad key sk-secret-key-1", "code": "sk-secret-key-1", "param": "sk-secret-key-1"}
    }
    answer = read_answer(400, orjson.dumps(body), redact=redact)
    assert (answer.message, answer.code, answer.param) == (f"bad key {REDACTED}", REDACTED, REDACTED)
    assert read_answer(400, b'{"error": "sk-secret-key-1"}', redact=redact).message == REDACTED
    # plain text is redacted before it is cut to 300 characters: no first half of a key survives
    plain = read_answer(500, b"x" * 295 + b" sk-secret-key-1", redact=redact).message
    assert "sk-" not in plain and len(plain) == 300


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return found


@pytest.mark.parametrize("name", ["read_answer", "StreamRelay"])
def test_every_path_from_provider_text_passes_a_redactor(name: str) -> None:
    """Provider bytes become router text only through read_answer (directly, or from a stream
    through the relay): every such call in router must hand it the attempt's redactor."""
    calls = _calls(name)
    assert calls
    missing = [where for where, call in calls if "redact" not in {k.arg for k in call.keywords}]
    assert missing == []
