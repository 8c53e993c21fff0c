"""The `router` command as an operator and a newcomer use it."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from router import cli
from tests.e2e.conftest import ROOT, ROUTER, Served, free_port, serve, stop


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROUTER, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_prints_the_routing_table(tmp_path: Path) -> None:
    done = run("check", "--config", "providers.yaml", "--demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "KIND",
        "MODEL",
        "PROVIDER",
        "KEY",
        "PRIORITY",
        "WEIGHT",
        "UPSTREAM",
        "ACCEPTS",
    ]
    rows = [line.split() for line in lines]
    assert [
        "chat",
        "doubao-seed-2-0-lite",
        "chenyu",
        "chenyu-0",
        "1",
        "1",
        "doubao-seed-2-0-lite-260428",
        "-",
    ] in rows
    assert [
        "chat",
        "gpt-4o",
        "real200",
        "real200-0",
        "1",
        "1",
        "gpt-4o",
        "tools,tool_role,json_object,json_schema,n",
    ] in rows
    # models by kind: chat first, then the demo's example embedding and rerank models
    kinds = [row[0] for row in rows[1:-1]]
    assert kinds == sorted(kinds, key=("chat", "embedding", "rerank").index)
    assert [
        "embedding",
        "text-embedding-3-small",
        "real200",
        "real200-0",
        "1",
        "1",
        "text-embedding-3-small",
        "n/a",
    ] in rows
    assert lines[-1].startswith("ok: 3 providers, 11 models (9 chat, 1 embedding, 1 rerank)")


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
    assert demo.banner[0].startswith("router: serving 11 models from simulated chenyu, real200, trinity")
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


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"))


@pytest.mark.parametrize("host", ["127.0.0.1", IPV6])
def test_serve_on_a_taken_port_says_so_in_one_line(host: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--config", "providers.yaml", "--demo", "--host", host, "--port", str(port))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert done.returncode == 1
    assert done.stderr == f"router: cannot listen on {address}: address already in use\n"
    assert done.stdout == ""  # no banner


def test_serve_on_an_address_this_host_lacks_says_so_in_one_line() -> None:
    done = run("serve", "--config", "providers.yaml", "--demo", "--host", "192.0.2.1", "--port", "8080")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "router: cannot listen on 192.0.2.1:8080: cannot assign requested address\n"


def _serve_for_banner(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`router serve ARGS` until its banner is out (its port is not known before)."""
    output = Path(tempfile.mkstemp(prefix="router-banner-", suffix=".log")[1])
    environment = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    with output.open("w") as sink:
        process = subprocess.Popen(
            [*ROUTER, "serve", *args],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        banner = [line for line in output.read_text().splitlines() if not line.startswith("{")]
        if len(banner) >= 3:
            output.unlink()
            return process, banner
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"no banner: {output.read_text()}")


@pytest.mark.parametrize(
    ("host", "shown", "reach"),
    [
        ("0.0.0.0", "0.0.0.0", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        pytest.param("::1", "[::1]", "[::1]", marks=IPV6.marks),
    ],
)
def test_the_banner_names_the_address_and_port_bound(host: str, shown: str, reach: str) -> None:
    # 0.0.0.0 is allowed here because the shipped config's demo client exists under --demo.
    process, banner = _serve_for_banner("--config", "providers.yaml", "--demo", "--host", host, "--port", "0")
    try:
        serving = re.search(r" on http://(\S+):(\d+)$", banner[0])
        assert serving is not None, banner[0]
        assert serving.group(1) == shown
        port = int(serving.group(2))
        assert port != 0
        url = shlex.split(banner[2])[2]
        assert url == f"http://{reach}:{port}/v1/chat/completions"
        assert httpx.get(f"http://{reach}:{port}/healthz", timeout=5).status_code == 200
    finally:
        stop(process)


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout == f"router {metadata.version('router')}\n"


def _options(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for command, subparser in action.choices.items():
                assert helps.get(command), f"{name} {command}: no help text"
                found += _options(subparser, f"{name} {command}")
        elif action.option_strings:
            found.append((f"{name} {'/'.join(action.option_strings)}", action))
    return found


def test_every_option_of_every_command_has_help() -> None:
    options = _options(cli._parser(), "router")
    named = {name for name, _ in options}
    assert {"router serve --host", "router sim --dialect", "router keys new --name"} <= named
    missing = [name for name, action in options if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_ledger_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    provider = (
        "providers: {p: {base_url: 'http://127.0.0.1:9', keys: [k], dialect: trinity, models: {m: {}}}}\n"
    )
    no_sink = tmp_path / "no-sink.yaml"
    no_sink.write_text("state: {url: 'redis://127.0.0.1:9'}\n" + provider)
    in_memory = tmp_path / "memory.yaml"
    in_memory.write_text(f"ledger: {{jsonl: '{tmp_path}'}}\n" + provider)
    cases = {
        ("ledger", "--format", "xml"): "argument --format: invalid choice",
        ("ledger", "summary", "--since", "soon"): "--since 'soon': expected a date",
        ("ledger", "export", "--config", str(no_sink)): "no sink: set ledger.postgres and/or ledger.jsonl",
        ("ledger", "export", "--config", str(in_memory)): "state.url is memory://",
    }
    for argv, said in cases.items():
        done = run(*argv)
        assert (done.returncode, done.stdout) == (2, ""), argv
        assert done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
