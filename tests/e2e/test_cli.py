"""The `router` command as an operator and a newcomer use it."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.e2e.conftest import ROOT, ROUTER, Served, free_port, serve, stop


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROUTER, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_prints_the_routing_table(tmp_path: Path) -> None:
    done = run("check", "--config", "providers.yaml", "--demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "PROVIDER", "KEY", "PRIORITY", "WEIGHT", "UPSTREAM"]
    assert ["doubao-seed-2-0-lite", "chenyu", "chenyu-0", "1", "1", "doubao-seed-2-0-lite-260428"] in [
        line.split() for line in lines
    ]
    assert lines[-1].startswith("ok: 3 providers")


def test_check_names_the_yaml_path_of_a_typo_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "providers.yaml"
    config.write_text((ROOT / "providers.yaml").read_text().replace("max_attempts: 3", "max_atempts: 3"))
    done = run("check", "--config", str(config), "--demo")
    assert done.returncode == 1
    assert "routing.max_atempts: unknown key (did you mean 'max_attempts'?)" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_without_demo_wants_the_provider_keys() -> None:
    done = run("check", "--config", "providers.yaml")
    assert done.returncode == 1
    assert "providers.trinity.keys[0]: ${TRINITY_API_KEY} is not set and has no default" in done.stderr


def test_serve_refuses_bad_config_and_unsafe_setups(tmp_path: Path) -> None:
    missing = run("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    config = tmp_path / "open.yaml"
    config.write_text("providers:\n  p: {base_url: 'http://127.0.0.1:9', keys: [k], models: {m: {}}}\n")
    exposed = run("serve", "--config", str(config), "--host", "0.0.0.0")
    assert exposed.returncode == 1 and "no client keys" in exposed.stderr
    workers = run("serve", "--config", str(config), "--workers", "2")
    assert workers.returncode == 1 and "needs shared state" in workers.stderr


def test_keys_new_prints_a_key_and_its_config_line() -> None:
    done = run("keys", "new", "--name", "search-team")
    key = re.search(r"(sk-router-\S+)", done.stdout).group(1)  # type: ignore[union-attr]
    digest = re.search(r'key_sha256: "([0-9a-f]{64})"', done.stdout).group(1)  # type: ignore[union-attr]
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert "- name: search-team" in done.stdout


def test_the_printed_curl_line_returns_a_completion(demo: Served) -> None:
    assert demo.banner[0].startswith("router: serving 9 models from simulated chenyu, real200, trinity")
    command = demo.banner[2].strip()
    assert command.startswith("curl ")
    if shutil.which("curl"):
        output = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout
        answer = httpx.Response(200, content=output.encode()).json()
    else:  # the same request, read from the printed line
        words = shlex.split(command)
        headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
        answer = httpx.post(words[2], headers=headers, content=words[words.index("-d") + 1]).json()
    assert answer["choices"][0]["message"]["content"].startswith("This is a simulated answer from trinity")


def test_router_sim_runs_as_its_own_process() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*ROUTER, "sim", "--dialect", "chenyu", "--port", str(port), "--faults", "status=500,times=1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": "doubao-seed-2-0-lite-260428", "messages": [{"role": "user", "content": "hi"}]}
        auth = {"Authorization": "Bearer k"}
        assert httpx.post(url, json=body, headers=auth).status_code == 500
        assert httpx.post(url, json=body, headers=auth).status_code == 200
    finally:
        stop(process)


def test_serve_without_clients_runs_open_on_loopback(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text("providers:\n  trinity: {base_url: '${X:-}', keys: ['${Y:-}'], models: {gpt-4o: {}}}\n")
    served = serve("--config", str(config), "--demo")
    try:
        answer = httpx.post(
            served.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        ).json()
        assert answer["choices"][0]["message"]["content"].startswith(
            "This is a simulated answer from trinity"
        )
        assert "Authorization" not in served.banner[2]
    finally:
        stop(served.process)
