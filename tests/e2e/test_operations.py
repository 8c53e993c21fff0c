"""A real `router serve` process as ops meet it: JSON logs without secrets, reload on SIGHUP or a
changed file, drain on SIGTERM, and metrics merged across `--workers 2`."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from router.sim import SimServer
from tests.conftest import CLIENT_KEY
from tests.e2e.conftest import Served, serve, stop
from tests.redis_rig import RedisServer

Sim = Callable[..., SimServer]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
SECRET_KEY = "sk-provider-SECRET-KEY-MARKER-7f3a"
SECRET_PROMPT = "PROMPT-SECRET-MARKER-91bc"


def config_text(
    sim: SimServer, *, models: str = "{gpt-4o: {}}", server: str = "", state: str = "", streaming: bool = True
) -> str:
    return (
        (f"server: {server}\n" if server else "")
        + (f"state: {state}\n" if state else "")
        + f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
        f"providers:\n  trinity:\n    base_url: {sim.base_url}\n"
        f"    keys: [{SECRET_KEY}]\n    models: {models}\n" + ("" if streaming else "    streaming: false\n")
    )


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        stop(s.process)


def chat(url: str, content: str = "Hello", **body: object) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **body},
        timeout=15,
    )


def json_lines(s: Served) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in s.log_lines() if line.startswith("{")]


def test_one_json_line_per_request_and_no_secret_anywhere(
    sim: Sim, served: list[Served], tmp_path: Path
) -> None:
    server = sim("trinity", keys=(SECRET_KEY,))
    path = tmp_path / "providers.yaml"
    path.write_text(config_text(server))
    s = serve("--config", str(path))
    served.append(s)
    ok = chat(s.url, SECRET_PROMPT)
    streamed = chat(s.url, SECRET_PROMPT, stream=True)
    refused = chat(s.url, SECRET_PROMPT, temperature=9)  # a 400 that quotes nothing back
    assert (ok.status_code, streamed.status_code, refused.status_code) == (200, 200, 400)
    server.set_faults("status=401")  # our provider key refused: the provider's text may quote it
    assert chat(s.url, SECRET_PROMPT).status_code == 502
    time.sleep(0.3)
    stop(s.process)
    output = s.output.read_text()
    assert SECRET_KEY not in output and SECRET_PROMPT not in output
    assert CLIENT_KEY not in output
    requests = [line for line in json_lines(s) if line["msg"] == "request"]
    assert [line["status"] for line in requests] == [200, 200, 400, 502]
    first = requests[0]
    assert first["request_id"] == ok.headers["x-request-id"]
    assert (first["client"], first["model"], first["provider"], first["key"]) == (
        "team",
        "gpt-4o",
        "trinity",
        "trinity-0",
    )
    assert first["attempts"] == 1 and first["outcome"] == "completed"
    assert isinstance(first["prompt_tokens"], int) and isinstance(first["completion_tokens"], int)
    assert first["duration_ms"] > 0 and first["ttft_ms"] is not None
    assert requests[1]["ttft_ms"] is not None
    # The refused key opened its breaker (401 marks it broken; structured, by name only).
    assert all(isinstance(line["ts"], str) and line["level"] for line in json_lines(s))


def test_sighup_reloads_without_dropping_a_stream_and_refuses_a_bad_config(
    sim: Sim, served: list[Served], tmp_path: Path
) -> None:
    # A 6 s stream that outlives the reload's retire delay. The checks between reloads ask for
    # whole answers, which this simulator gives at once: `streaming: false` keeps them whole.
    server = sim("trinity", chunks=120, chunk_gap=0.05)
    path = tmp_path / "providers.yaml"
    path.write_text(config_text(server, streaming=False))
    s = serve("--config", str(path))
    served.append(s)
    result: list[httpx.Response] = []
    streaming = threading.Thread(target=lambda: result.append(chat(s.url, stream=True)))
    streaming.start()
    time.sleep(0.3)
    path.write_text(
        config_text(server, models="{gpt-4o: {}, gpt-4o-mini: {upstream: gpt-4o}}", streaming=False)
    )
    os.kill(s.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "gpt-4o-mini" not in httpx.get(s.url + "/v1/models", headers=AUTH).text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    streaming.join()
    assert result[0].status_code == 200 and result[0].text.endswith("data: [DONE]\n\n")  # not dropped
    assert chat(s.url, model="gpt-4o-mini").status_code == 200

    path.write_text("providers: {trinity: {base_url: 42}}\n")  # broken
    os.kill(s.process.pid, signal.SIGHUP)
    while 'router_config_reloads_total{result="error"} 1.0' not in httpx.get(s.url + "/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert chat(s.url, model="gpt-4o-mini").status_code == 200  # the old config serves on
    path.write_bytes(config_text(server).encode()[:40] + b"\xe4\xbd")  # cut mid-character, mid-write
    os.kill(s.process.pid, signal.SIGHUP)
    while 'router_config_reloads_total{result="error"} 2.0' not in httpx.get(s.url + "/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert chat(s.url, model="gpt-4o-mini").status_code == 200
    refused = [line for line in json_lines(s) if line["msg"].startswith("config reload refused")]
    assert any("providers.trinity" in str(p) for p in refused[0]["problems"])  # type: ignore[union-attr]
    assert refused[1]["error"] == "UnicodeDecodeError"


def test_a_changed_config_file_is_reloaded_without_a_signal(
    sim: Sim, served: list[Served], tmp_path: Path
) -> None:
    server = sim("trinity")
    path = tmp_path / "providers.yaml"
    path.write_text(config_text(server))
    s = serve("--config", str(path))
    served.append(s)
    path.write_text(
        config_text(server, models="{gpt-4o: {}, added-model: {upstream: gpt-4o}}")
    )  # as a ConfigMap update
    deadline = time.monotonic() + 10
    while "added-model" not in httpx.get(s.url + "/v1/models", headers=AUTH).text:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert 'router_config_reloads_total{result="ok"} 1.0' in httpx.get(s.url + "/metrics").text


def test_sigterm_turns_readyz_503_at_once_then_lets_streams_finish(
    sim: Sim, served: list[Served], tmp_path: Path
) -> None:
    server = sim("trinity", chunks=40, chunk_gap=0.05)  # a 2 s stream
    path = tmp_path / "providers.yaml"
    path.write_text(config_text(server, server="{shutdown_delay: 1s, grace: 10s}"))
    s = serve("--config", str(path))
    served.append(s)
    result: list[httpx.Response] = []
    streaming = threading.Thread(target=lambda: result.append(chat(s.url, stream=True)))
    streaming.start()
    time.sleep(0.3)
    os.kill(s.process.pid, signal.SIGTERM)
    time.sleep(0.1)
    ready = httpx.get(s.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    time.sleep(1.5)  # past shutdown_delay: no new connections
    with pytest.raises(httpx.TransportError):
        httpx.get(s.url + "/healthz", timeout=2)
    streaming.join()
    assert result[0].status_code == 200 and result[0].text.endswith("data: [DONE]\n\n")  # finished whole
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
    assert s.process.wait(10) in (0, -signal.SIGTERM)


def test_metrics_are_merged_across_two_workers(
    sim: Sim, served: list[Served], tmp_path: Path, fresh_redis: RedisServer
) -> None:
    server = sim("trinity")
    path = tmp_path / "providers.yaml"
    path.write_text(config_text(server, state=f'{{url: "{fresh_redis.url}"}}'))
    s = serve("--config", str(path), "--workers", "2")
    served.append(s)
    with httpx.Client() as client:  # new connections spread over both workers
        for _ in range(20):
            response = client.post(
                s.url + "/v1/chat/completions",
                headers={**AUTH, "Connection": "close"},
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
    pattern = re.compile(r'^router_requests_total\{[^}]*code="200"[^}]*\} (\S+)$', re.M)
    for _ in range(4):  # whichever worker answers the scrape, it reports both
        text = httpx.get(s.url + "/metrics", headers={"Connection": "close"}).text
        assert sum(float(v) for v in pattern.findall(text)) == 20
