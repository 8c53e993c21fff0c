"""Egress decisions without sockets: proxy variables, NO_PROXY matching, providers.yaml `tls`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from router import egress
from router.config import ConfigError, parse
from router.egress import Proxy, ProxySettingError, bypassed, from_environ, parse_proxy

PROXY = "http://proxy.corp:3128"


def test_no_variables_no_proxy() -> None:
    assert from_environ({}).proxy_for("https", "api.example.com", 443) is None


def test_each_scheme_has_its_own_variable() -> None:
    routes = from_environ({"HTTPS_PROXY": PROXY, "HTTP_PROXY": "http://plain:8080"})
    assert routes.proxy_for("https", "api.example.com", 443) == Proxy("proxy.corp", 3128)
    assert routes.proxy_for("http", "api.example.com", 80) == Proxy("plain", 8080)
    assert from_environ({"HTTP_PROXY": PROXY}).proxy_for("https", "api.example.com", 443) is None


def test_lowercase_wins_even_when_empty_as_urllib_reads_them() -> None:
    both = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert from_environ(both).proxy_for("https", "h", 443) == Proxy("lower", 2)
    unset = {"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}
    assert from_environ(unset).proxy_for("https", "h", 443) is None
    assert from_environ({"HTTPS_PROXY": PROXY, "no_proxy": "", "NO_PROXY": "*"}).no_proxy == ()


def test_a_proxy_url_without_scheme_or_port_is_read_as_curl_does() -> None:
    assert parse_proxy("proxy.corp:3128") == Proxy("proxy.corp", 3128)
    assert parse_proxy("http://proxy.corp") == Proxy("proxy.corp", 80)
    assert parse_proxy("http://[fd00::1]:3128") == Proxy("fd00::1", 3128)


def test_userinfo_becomes_basic_authorization_and_is_never_shown() -> None:
    proxy = parse_proxy("http://ops%40corp:s3cr%3At@proxy.corp:3128")
    assert proxy.authorization == b"Basic " + base64.b64encode(b"ops@corp:s3cr:t")
    assert "s3cr" not in repr(proxy) and "ops" not in repr(proxy)
    assert proxy.address == "proxy.corp:3128"
    assert parse_proxy("http://user@proxy.corp").authorization == b"Basic " + base64.b64encode(b"user:")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://user:s3cret@proxy.corp:443", "only http:// proxies are supported, not https://"),
        ("socks5://user:s3cret@proxy.corp:1080", "only http:// proxies are supported, not socks5://"),
        ("http://user:s3cret@proxy.corp:notaport", "not a proxy URL"),
        ("http://user:s3cret@:3128", "the proxy URL has no host"),
    ],
)
def test_unusable_proxy_settings_stop_the_start_without_their_credentials(value: str, message: str) -> None:
    with pytest.raises(ProxySettingError) as caught:
        from_environ({"HTTPS_PROXY": value})
    assert str(caught.value) == f"HTTPS_PROXY: {message}"
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "anything.example", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),  # subdomains, as curl
        (".example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),  # a leading dot changes nothing
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),  # a suffix of the name, not of its labels
        ("example.com", "example.com.evil.io", 443, False),
        ("EXAMPLE.com.", "Api.Example.COM", 443, True),
        ("example.com:8443", "api.example.com", 8443, True),
        ("example.com:8443", "api.example.com", 443, False),
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("10.1.2.3", "10.1.2.4", 443, False),
        ("10.0.0.0/8", "10.200.0.1", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),  # names are not resolved to decide
        ("fd00::/8", "fd00::1", 443, True),
        ("::1", "::1", 443, True),
        ("[::1]:8443", "::1", 8443, True),
        ("[::1]:8443", "::1", 443, False),
        ("localhost, 127.0.0.1  .internal", "svc.internal", 443, True),
        ("", "api.example.com", 443, False),
        ("not/a/range", "api.example.com", 443, False),
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, expected: bool) -> None:
    entries = from_environ({"NO_PROXY": no_proxy}).no_proxy
    assert bypassed(host, port, entries) is expected


def test_no_proxy_decides_per_origin() -> None:
    routes = from_environ({"HTTPS_PROXY": PROXY, "NO_PROXY": "internal.corp,10.0.0.0/8"})
    assert routes.proxy_for("https", "llm.internal.corp", 443) is None
    assert routes.proxy_for("https", "10.1.1.1", 443) is None
    assert routes.proxy_for("https", "api.openai.com", 443) == egress.Proxy("proxy.corp", 3128)


# -- providers.yaml `tls` --------------------------------------------------------------------


def provider(tls: str) -> str:
    return f"providers:\n  p: {{base_url: 'https://p.example', keys: [k], models: {{m: {{}}}}, tls: {tls}}}\n"


def test_tls_ca_file_is_loaded_when_the_config_is(tmp_path: Path) -> None:
    import trustme

    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    config = parse(provider(f"{{ca_file: '{path}'}}"), env={})
    assert config.providers["p"].tls.ca_file == str(path)
    assert parse(provider("{}"), env={}).providers["p"].tls.ca_file is None


def test_tls_problems_are_config_errors_with_their_path(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for tls, message in [
        (f"{{ca_file: '{tmp_path / 'missing.pem'}'}}", "providers.p.tls.ca_file: no such file: "),
        (f"{{ca_file: '{junk}'}}", "providers.p.tls.ca_file: cannot load "),
        ("{ca: x}", "providers.p.tls.ca: unknown key (expected one of: ca_file)"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse(provider(tls), env={})
        assert any(line.startswith(message) for line in caught.value.problems), caught.value.problems
