"""Clients and a purpose-built router for the end-to-end tests of /v1/embeddings, /v1/rerank,
/v1/responses and /v1/messages.

Most of those tests talk to `router serve --demo` (the `demo` fixture). What the shipped
config cannot show (a client over its rate limit, a model no provider can serve, a stream
that breaks half-way) needs providers that misbehave on purpose: `edge_router` is a router
in front of such simulators.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import openai

from router import config as configuration
from router.sim import SimServer
from tests.conftest import RouterThread, provider_yaml
from tests.e2e.conftest import DEMO_KEY

TIMEOUT = 30.0
"""Generous: a slow machine must not fail a test. No test asserts on time."""


def openai_client(url: str, *, key: str = DEMO_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


def anthropic_client(url: str, *, key: str = DEMO_KEY) -> anthropic.Anthropic:
    """As Anthropic's SDK is configured against a gateway: the base URL without /v1, the key in
    `x-api-key`. No retries, so every error reaches the test as its first answer."""
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=TIMEOUT)


def tiny_png() -> bytes:
    """A valid 1x1 RGB PNG, built here rather than kept as an opaque blob."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8 bits, truecolour
    pixels = zlib.compress(b"\x00\x20\x80\xff")  # filter byte 0, then one RGB pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# -- a router in front of misbehaving providers --------------------------------------------------

OPEN_KEY = "sk-edge-open"
LIMITED_KEY = "sk-edge-limited"
"""A client allowed one request a minute: its second is over the limit."""

STEADY = "gpt-4o"
"""Served by a healthy provider."""
UNSERVED = "gpt-lost"
"""Its only provider (a reseller) has no channel for it: answers 503 无可用渠道."""
FAILING = "claude-sonnet-4"
"""Its only provider fails every request with a 503."""
CUT = "gpt-5.1"
"""Its only provider closes every stream after three pieces of text."""


@contextmanager
def edge_router() -> Iterator[RouterThread]:
    """router in front of four simulators, one per model above, with two clients and one attempt
    per request (each failure is the answer). A context manager rather than a fixture: each
    module wraps it in its own fixture, as an imported fixture would shadow its own name in
    every test that asks for it."""
    sims = {
        "steady": SimServer("real200").start_in_thread(),
        "unserving": SimServer("trinity").start_in_thread(),
        "failing": SimServer("real200", faults="status=503").start_in_thread(),
        "cutting": SimServer("trinity", faults="cut=3").start_in_thread(),
    }
    text = (
        f"clients:\n  - name: open\n    key: {OPEN_KEY}\n"
        f"  - name: limited\n    key: {LIMITED_KEY}\n    limits: {{rpm: 1}}\n"
        "routing: {max_attempts: 1}\n"
        "providers:\n"
        + provider_yaml("steady", sims["steady"], [STEADY])
        + provider_yaml("unserving", sims["unserving"], {UNSERVED: "{upstream: gpt-no-channel}"})
        + provider_yaml("failing", sims["failing"], [FAILING])
        + provider_yaml("cutting", sims["cutting"], [CUT])
    )
    try:
        router = RouterThread(configuration.parse(text, env={})).start()
        try:
            yield router
        finally:
            router.stop()
    finally:
        for sim in sims.values():
            sim.stop()
