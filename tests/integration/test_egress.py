"""Provider calls leave as users' networks need: a custom CA, HTTPS_PROXY tunnels, HTTP_PROXY,
NO_PROXY. Real sockets on loopback: a TLS simulator from a throw-away CA and a CONNECT proxy."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trustme

from router import config as configuration
from router.config import Target
from router.errors import UpstreamConnectError
from router.upstream import Upstream, base_headers
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml
from tests.egress_rig import PROVIDER_HOST, ConnectProxy, TLSSim

BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]})
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def tls_sim(ca: trustme.CA) -> Iterator[Callable[..., TLSSim]]:
    started: list[TLSSim] = []

    def start(hostname: str = "127.0.0.1") -> TLSSim:
        server = TLSSim("real200", ca, hostname=hostname).start_in_thread()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def target(base_url: str, ca_file: str | None = None) -> Target:
    tls = f", tls: {{ca_file: {ca_file}}}" if ca_file else ""
    text = config_yaml(f"  p: {{base_url: {base_url}, keys: [k], models: {{gpt-4o: {{}}}}{tls}}}\n")
    return configuration.parse(text, env={}).targets["gpt-4o"][0]


async def call(t: Target, environ: dict[str, str], *, times: int = 1) -> tuple[int, bytes]:
    """`times` calls on one Upstream (after the first they ride its pooled connection); the last answer."""
    upstream = Upstream.pooled({"p": t.provider}, connect_timeout=2, environ=environ)
    try:
        for _ in range(times):
            response = await upstream.send(t, BODY, base_headers(t, stream=False))
            body = await response.read()
            response.close()
        return response.status, body
    finally:
        await upstream.aclose()


async def test_a_provider_over_tls_with_its_ca_file(tls_sim: Callable[..., TLSSim], ca_file: str) -> None:
    status, body = await call(target(tls_sim().base_url, ca_file), {})
    assert status == 200
    assert orjson.loads(body)["choices"][0]["message"]["content"]


async def test_a_certificate_nobody_trusts_is_a_connect_error(tls_sim: Callable[..., TLSSim]) -> None:
    with pytest.raises(UpstreamConnectError, match=r"^p: could not connect \(SSLCertVerificationError\)$"):
        await call(target(tls_sim().base_url), {})


async def test_ssl_cert_file_sets_the_default_trust_store(
    tls_sim: Callable[..., TLSSim], ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL reads SSL_CERT_FILE itself when the default context loads its verify paths.
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    status, _ = await call(target(tls_sim().base_url), {})
    assert status == 200


async def test_https_proxy_tunnels_to_the_provider_and_tls_runs_inside(
    tls_sim: Callable[..., TLSSim], ca_file: str
) -> None:
    server = tls_sim(hostname=PROVIDER_HOST)  # resolvable by the proxy only
    with ConnectProxy() as proxy:
        status, _ = await call(target(server.base_url, ca_file), {"HTTPS_PROXY": proxy.url()}, times=2)
    assert status == 200
    assert [tunnel.target for tunnel in proxy.tunnels] == [f"{PROVIDER_HOST}:{server.port}"]  # kept alive
    assert proxy.tunnels[0].authorization is None
    assert proxy.tunnels[0].first_bytes[:1] == b"\x16"  # a TLS handshake record ...
    assert PROVIDER_HOST.encode() in proxy.tunnels[0].first_bytes  # ... naming the provider (SNI)


async def test_no_proxy_goes_straight_to_the_provider(tls_sim: Callable[..., TLSSim], ca_file: str) -> None:
    server = tls_sim(hostname="localhost")
    with ConnectProxy() as proxy:
        environ = {"https_proxy": proxy.url(), "NO_PROXY": "internal.example, .localhost,127.0.0.0/8"}
        status, _ = await call(target(server.base_url, ca_file), environ)
    assert status == 200
    assert proxy.tunnels == []


async def test_the_proxy_url_userinfo_is_sent_as_basic_proxy_authorization(
    tls_sim: Callable[..., TLSSim], ca_file: str
) -> None:
    server = tls_sim(hostname=PROVIDER_HOST)
    with ConnectProxy(credentials="ops:p@ss w0rd") as proxy:
        environ = {"HTTPS_PROXY": proxy.url("ops:p%40ss%20w0rd")}
        status, _ = await call(target(server.base_url, ca_file), environ)
    assert status == 200
    assert proxy.tunnels[0].authorization == "Basic " + base64.b64encode(b"ops:p@ss w0rd").decode()


@pytest.mark.parametrize(("refuse", "status"), [(None, 407), (403, 403), (502, 502)])
async def test_a_proxy_that_refuses_the_tunnel_is_a_clean_connect_error(
    tls_sim: Callable[..., TLSSim], ca_file: str, refuse: int | None, status: int
) -> None:
    server = tls_sim(hostname=PROVIDER_HOST)
    with ConnectProxy(credentials="ops:right", refuse=refuse) as proxy:
        environ = {"HTTPS_PROXY": proxy.url("ops:wrong-secret")}
        with pytest.raises(UpstreamConnectError) as caught:
            await call(target(server.base_url, ca_file), environ)
    assert caught.value.message == f"p: could not connect: the proxy answered CONNECT with {status}"
    assert "wrong-secret" not in str(caught.value) and "ops" not in str(caught.value)


async def test_http_proxy_gets_an_http_provider_request_in_absolute_form() -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.startswith(b"content-length"))
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        environ = {"HTTP_PROXY": f"http://ops:pw@127.0.0.1:{port}", "HTTPS_PROXY": "http://unused.invalid:1"}
        status, body = await call(target(f"'http://{PROVIDER_HOST}:8000/v1?api-version=2'"), environ)
    finally:
        server.close()
    assert (status, body) == (200, b"{}")
    request = seen[0]
    line = f"POST http://{PROVIDER_HOST}:8000/v1/chat/completions?api-version=2 HTTP/1.1\r\n".encode()
    assert request.startswith(line)
    assert f"\r\nhost: {PROVIDER_HOST}:8000\r\n".encode() in request
    assert b"\r\nproxy-authorization: Basic " + base64.b64encode(b"ops:pw") + b"\r\n" in request


def test_a_chat_completion_through_the_router_reaches_a_provider_only_the_proxy_can(
    tls_sim: Callable[..., TLSSim],
    ca_file: str,
    router: Callable[..., RouterThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = tls_sim(hostname=PROVIDER_HOST)
    with ConnectProxy() as proxy:
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", proxy.url())  # read as the router starts
        r = router(
            config_yaml(
                f"  p:\n    base_url: {server.base_url}\n    keys: [k]\n"
                f"    tls: {{ca_file: {ca_file}}}\n    models: {{gpt-4o: {{}}}}\n"
            )
        )
        answer = httpx.post(
            r.url + "/v1/chat/completions",
            content=BODY,
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        r.stop()  # closes its pools before the proxy goes
    assert [t.target for t in proxy.tunnels] == [f"{PROVIDER_HOST}:{server.port}"]
