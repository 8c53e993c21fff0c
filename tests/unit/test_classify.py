from __future__ import annotations

import orjson
import pytest

from router.classify import Verdict, classify, read_answer, retry_after_seconds, to_error


def answer(status: int, message: str = "", code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "x", "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (503, answer(503, "当前分组 default 下对于模型 x 无可用渠道", "model_not_found"), Verdict.NOT_SERVED),
        (503, answer(503, "当前分组 default 下对于模型 x 无可用渠道"), Verdict.NOT_SERVED),
        (404, answer(404, "The model x does not exist", "model_not_found"), Verdict.NOT_SERVED),
        (500, answer(500, "当前负载已饱和,请稍后再试"), Verdict.RATE_LIMITED),
        (429, answer(429, "slow down"), Verdict.RATE_LIMITED),
        (402, answer(402, "余额不足"), Verdict.QUOTA_EXHAUSTED),
        (403, answer(403, "user quota is not enough", "insufficient_user_quota"), Verdict.QUOTA_EXHAUSTED),
        (401, answer(401, "Invalid API key", "invalid_api_key"), Verdict.KEY_REJECTED),
        (403, answer(403, "forbidden"), Verdict.KEY_REJECTED),
        (400, answer(400, "too long", "context_length_exceeded"), Verdict.CLIENT_FAULT),
        (400, answer(400, "bad"), Verdict.CLIENT_FAULT),
        (403, answer(403, "blocked", "content_filter"), Verdict.CLIENT_FAULT),
        (500, answer(500, "boom"), Verdict.SERVER_ERROR),
        (502, b"<html>bad gateway</html>", Verdict.SERVER_ERROR),
    ],
)
def test_the_table_decides(status: int, body: bytes, verdict: Verdict) -> None:
    assert classify(read_answer(status, body)) is verdict


def test_read_answer_copes_with_every_shape() -> None:
    assert read_answer(400, b'{"error": "plain"}').message == "plain"
    assert read_answer(400, b'{"message": "flat", "code": 7}').code == "7"
    assert read_answer(400, b"just text").message == "just text"
    assert read_answer(502, b"<html>nginx</html>").message == ""
    parsed = read_answer(400, b'{"error": {"message": "m", "code": "c", "param": "temperature"}}')
    assert (parsed.message, parsed.code, parsed.param) == ("m", "c", "temperature")


def test_client_faults_pass_through_with_the_providers_words() -> None:
    error = to_error(
        "real200",
        read_answer(400, answer(400, "presence_penalty must be between -2 and 2", "invalid_request_error")),
    )
    assert error.http_status == 400 and not error.retryable
    assert error.message == "presence_penalty must be between -2 and 2"
    assert error.payload()["error"]["type"] == "invalid_request_error"


def test_our_rejected_key_becomes_502_without_the_providers_text() -> None:
    error = to_error("trinity", read_answer(401, answer(401, "Incorrect API key provided: xh-abc***xyz")))
    assert error.http_status == 502
    assert "xh-abc" not in error.message
    assert error.error_code == "upstream_error"


def test_rate_limits_keep_retry_after() -> None:
    error = to_error("p", read_answer(429, answer(429, "slow")), retry_after=2.4)
    assert error.http_status == 429 and error.headers == {"Retry-After": "2"}
    assert error.retry_after == 2.4


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480) == 10
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("inf") is None and retry_after_seconds("1e400") is None
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("99999999") == 86400  # a key is never held for more than a day
