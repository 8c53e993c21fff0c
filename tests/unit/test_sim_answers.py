from __future__ import annotations

import pytest

from router.sim.answers import answer
from router.sim.dialects import DIALECTS


@pytest.mark.parametrize("chunks", [1, 8, 34, 200, 500])
def test_a_stream_has_as_many_content_chunks_as_asked(chunks: int) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    made = answer(DIALECTS["trinity"], body, chunks=chunks, call_id="call_1")
    assert len(made.pieces) == chunks
    assert made.usage["completion_tokens"] == max(chunks, 8)
