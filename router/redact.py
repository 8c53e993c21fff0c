"""Pure: provider text with router's credentials taken out.

A provider may quote what it was sent ("Incorrect API key provided: sk-..."), and its text
reaches clients (a passed-through 4xx, the last provider's message in a 502, a stream's
error event), stored answers (idempotent replays) and, through them, logs. Every piece of
provider text becomes router text in one place, `classify.read_answer`, which runs each
string it keeps through the attempt's Redactor: every provider key of the config (built
once per config), plus the value of any credential-like header the attempt forwarded
(built for that attempt only, and only when such a header was sent).

Keys of MIN_ANYWHERE characters or more are replaced wherever they occur. Shorter ones are
still replaced, but only as a whole token (not inside a longer run of letters, digits,
`_` or `-`): a three-letter test key must not turn every word that contains it into
`[redacted]`, and a key that short is quoted as a token when it is quoted at all.
Only whole secrets are matched: a provider that quotes a fragment (`sk-abc***xyz`) keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_ANYWHERE = 8

_CREDENTIAL_NAME = re.compile(
    r"authorization|api-?key|token|secret|passw|credential|cookie|(?:^|-)auth(?:-|$)"
)
"""Header names (lower case) whose values are credentials."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]* +(\S+)\s*$")
"""`Bearer <token>`, `Basic <token>`: the token alone is a secret too."""


def is_credential_header(name: str) -> bool:
    return _CREDENTIAL_NAME.search(name.lower()) is not None


class Redactor:
    """Replaces every one of a fixed set of secrets with `[redacted]`. Immutable."""

    __slots__ = ("_pattern", "secrets")

    def __init__(self, secrets: Iterable[str] = ()):
        unique = {s for s in secrets if s}
        self.secrets = frozenset(unique)
        longest_first = sorted(unique, key=lambda s: (-len(s), s))  # a key inside another: the longer wins
        anywhere = [re.escape(s) for s in longest_first if len(s) >= MIN_ANYWHERE]
        tokens = [re.escape(s) for s in longest_first if len(s) < MIN_ANYWHERE]
        parts = [*anywhere]
        if tokens:
            parts.append(r"(?<![\w-])(?:" + "|".join(tokens) + r")(?![\w-])")
        self._pattern = re.compile("|".join(parts)) if parts else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def plus(self, values: Iterable[str]) -> Redactor:
        """This redactor and the credential header values `values` (each token after a scheme too)."""
        more = set(self.secrets)
        for value in values:
            value = value.strip()
            more.add(value)
            scheme = _SCHEME.match(value)
            if scheme is not None:
                more.add(scheme.group(1))
        return self if more == self.secrets else Redactor(more)


NOTHING = Redactor()
"""Redacts nothing: for text that carries no provider's words (and unit tests)."""
