"""Client keys: who is calling, and which models they may use."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re

from .config import Client
from .errors import InvalidApiKey, ModelNotAllowed


class Authenticator:
    """Maps a bearer key to its client. With no clients configured, auth is off."""

    def __init__(self, clients: tuple[Client, ...]):
        self.enabled = bool(clients)
        self._by_digest = {c.key_sha256: c for c in clients}
        self._allow = {c.name: _compile_globs(c.models) for c in clients}

    def authenticate(self, authorization: str | None) -> Client | None:
        """The calling client; None when auth is off. Raises InvalidApiKey (401)."""
        if not self.enabled:
            return None
        if not authorization:
            raise InvalidApiKey(
                "You didn't provide an API key. Send it in the Authorization header: 'Bearer YOUR_KEY'."
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise InvalidApiKey("The Authorization header must be 'Bearer YOUR_KEY'.")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        # Looking up by digest leaks nothing useful about stored keys: a caller controls the
        # key, not its digest, so timing says nothing about how close a guess was. The
        # final comparison is constant-time regardless.
        client = self._by_digest.get(digest)
        if client is None or not hmac.compare_digest(client.key_sha256, digest):
            raise InvalidApiKey("Incorrect API key provided.", headers={"WWW-Authenticate": "Bearer"})
        return client

    def allows(self, client: Client | None, model: str) -> bool:
        return client is None or self._allow[client.name].match(model) is not None

    def check_model(self, client: Client | None, model: str) -> None:
        """Raises ModelNotAllowed (403) when the client's allow-list excludes the model."""
        if not self.allows(client, model):
            assert client is not None
            raise ModelNotAllowed(
                f"The key of client '{client.name}' may not use model '{model}'.", param="model"
            )


def _compile_globs(globs: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or r"(?!)")
