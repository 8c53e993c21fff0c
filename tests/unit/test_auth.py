from __future__ import annotations

import hashlib

import pytest

from router.auth import Authenticator
from router.config import Client
from router.errors import InvalidApiKey, ModelNotAllowed


def client(name: str, key: str, models: tuple[str, ...] = ("*",)) -> Client:
    return Client(name=name, key_sha256=hashlib.sha256(key.encode()).digest(), models=models)


AUTH = Authenticator((client("search", "sk-search", ("doubao-*", "gpt-4o")), client("all", "sk-all")))


def test_keys_identify_clients() -> None:
    assert AUTH.authenticate("Bearer sk-search").name == "search"  # type: ignore[union-attr]
    assert AUTH.authenticate("bearer   sk-all").name == "all"  # type: ignore[union-attr]


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic sk-all", "Bearer sk-nope", "sk-all"])
def test_bad_or_missing_keys_are_401(header: str | None) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        AUTH.authenticate(header)
    assert caught.value.http_status == 401
    assert "sk-nope" not in caught.value.message


def test_allow_list_globs() -> None:
    search = AUTH.authenticate("Bearer sk-search")
    assert AUTH.allows(search, "doubao-seed-2-0-lite")
    assert AUTH.allows(search, "gpt-4o")
    assert not AUTH.allows(search, "gpt-4o-mini")
    assert not AUTH.allows(search, "claude-sonnet-4")
    with pytest.raises(ModelNotAllowed):
        AUTH.check_model(search, "claude-sonnet-4")


def test_no_clients_means_no_auth() -> None:
    open_door = Authenticator(())
    assert open_door.authenticate(None) is None
    assert open_door.allows(None, "anything")
