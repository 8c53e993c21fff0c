"""POST /v1/chat/completions: the OpenAI shape is router's own, so nothing is translated.

Its body is checked by validate.py; the chat stream and answer are the client's as the relay
and the envelope make them.
"""

from __future__ import annotations

from ..types import JSON
from .endpoint import Endpoint, checked_as_chat


def _as_sent(body: JSON) -> JSON:
    return body


ENDPOINT = Endpoint(
    name="chat", kind="chat", upstream_path="/chat/completions", request=checked_as_chat(_as_sent)
)
