"""Pure: the simulators' tokens — what usage counts, what logprobs describe, what chunks carry.

A token is a word with its leading whitespace, or one JSON punctuation mark, so prose counts
one token a word (the answer "This is a simulated answer from trinity (gpt-4o)." is 8) and
the tokens of any text join back to exactly that text.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

FILLER = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec"
    " romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()

MAX_TOP_LOGPROBS = 20

_TOKEN = re.compile(r'\s*[^\s{}\[\]",:]+|\s*[{}\[\]",:]|\s+')


def tokens(text: str) -> list[str]:
    found: list[str] = _TOKEN.findall(text)
    if len(found) > 1 and not found[-1].strip():  # trailing space, as a stop sequence leaves it
        found[-2:] = [found[-2] + found[-1]]
    return found


def count(text: str) -> int:
    return len(tokens(text))


def group(words: list[str], pieces: int) -> list[list[str]]:
    """`words` in order, in `pieces` runs (fewer if there are fewer words) whose sizes differ
    by at most one, so --chunks N gives N content chunks; an empty text is one empty run,
    so a stream always has a content chunk."""
    if not words:
        return [[]]
    runs = min(max(1, pieces), len(words))
    size, longer = divmod(len(words), runs)
    starts = [k * size + min(k, longer) for k in range(runs + 1)]
    return [words[starts[k] : starts[k + 1]] for k in range(runs)]


def logprobs(words: list[str], *, choice: int, top: int) -> list[dict[str, Any]]:
    """One entry per token, as OpenAI's `logprobs.content`: deterministic negative values, and
    `top` alternatives led by the token itself, each less likely than the one before."""
    top = max(0, min(top, MAX_TOP_LOGPROBS))
    entries = []
    for position, word in enumerate(words):
        seed = zlib.crc32(f"{choice}:{position}:{word}".encode())
        logprob = -round(0.01 + (seed % 2000) / 1000, 4)
        lead = word[: len(word) - len(word.lstrip())]
        others = [lead + f for f in FILLER[seed % len(FILLER) :] + FILLER[: seed % len(FILLER)]]
        others = [o for o in others if o != word]
        ranked = [(word, logprob)] + [(o, round(logprob - 1 - j / 2, 4)) for j, o in enumerate(others)]
        entry = _entry(word, logprob)
        entry["top_logprobs"] = [_entry(t, p) for t, p in ranked[:top]]
        entries.append(entry)
    return entries


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}
