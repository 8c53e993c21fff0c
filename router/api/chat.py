"""POST /v1/chat/completions: the OpenAI shape is router's own, so nothing is translated.

Its body is checked by validate.py; the chat stream and answer are the client's as the relay
and the envelope make them.
"""

from __future__ import annotations

from ..types import JSON
from ..validate import validate
from .endpoint import Endpoint


def _checked(body: JSON) -> JSON:
    validate(body)
    return body


ENDPOINT = Endpoint(name="chat", kind="chat", upstream_path="/chat/completions", request=_checked)
