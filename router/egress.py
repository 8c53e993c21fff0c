"""Which proxy a provider call goes through: HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as users set them.

Pure: the environment comes in as a mapping (read once at startup), a decision comes out per
provider origin. The conventions are curl's and Python's (urllib's getproxies, which requests
and httpx use): a lowercase variable wins over its uppercase twin, even when it is empty; a
NO_PROXY entry matches its host and every subdomain, with or without a leading dot; `*` bypasses
every proxy. Beyond them, as curl and Go do: `host:port` entries and CIDR ranges. A CIDR range
matches IP literals only (nothing is resolved to decide). Loopback is proxied like any other host
unless NO_PROXY names it, as curl and requests do.

A proxy's userinfo becomes its Proxy-Authorization and is never shown: not in a repr, an error
or a log line.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

PROXY_VARIABLES = {"https": "https_proxy", "http": "http_proxy"}
"""The variable naming the proxy for each provider scheme (lowercase; the uppercase one too)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: CONNECT tunnels for https:// providers, absolute-form requests for http://."""

    host: str
    port: int
    authorization: bytes | None = field(default=None, repr=False)
    """The Proxy-Authorization value (Basic) from the proxy URL's userinfo, if it had one."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Egress:
    """The proxy settings of a process, as the environment gave them."""

    proxies: Mapping[str, Proxy] = field(default_factory=dict)
    """Provider scheme ("https", "http") -> its proxy."""
    no_proxy: tuple[str, ...] = ()

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a call to scheme://host:port goes through; None: straight to it."""
        proxy = self.proxies.get(scheme)
        if proxy is None or bypassed(host, port, self.no_proxy):
            return None
        return proxy


class ProxySettingError(ValueError):
    """A proxy variable router cannot honour. The message names the variable, never credentials."""


def from_environ(environ: Mapping[str, str]) -> Egress:
    proxies = {}
    for scheme, name in PROXY_VARIABLES.items():
        variable, value = _variable(environ, name)
        if value:
            proxies[scheme] = parse_proxy(value, variable)
    _, no_proxy = _variable(environ, "no_proxy")
    return Egress(proxies=proxies, no_proxy=tuple(_entries(no_proxy)))


def parse_proxy(url: str, variable: str = "proxy") -> Proxy:
    """`http://[user:password@]host[:port]`; without a scheme, http:// is meant (as curl reads it)."""
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # the message could quote the URL: say only where it came from
        raise ProxySettingError(f"{variable}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        # An https:// or socks proxy: going straight to the provider instead would bypass a proxy
        # the operator requires, so refuse to start rather than guess.
        raise ProxySettingError(f"{variable}: only http:// proxies are supported, not {parts.scheme}://")
    if not parts.hostname:
        raise ProxySettingError(f"{variable}: the proxy URL has no host")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    return Proxy(host=parts.hostname, port=port or 80, authorization=authorization)


def bypassed(host: str, port: int, no_proxy: tuple[str, ...] | list[str]) -> bool:
    """Whether NO_PROXY's entries send a call to host:port straight to it."""
    host = _plain(host)
    address = _ip(host)
    for entry in no_proxy:
        if entry == "*":
            return True
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue  # not a range after all; an unusable entry matches nothing
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry_address = _ip(name)
        if entry_address is not None:
            if address == entry_address:
                return True
            continue
        name = name.removeprefix("*").removeprefix(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """The lowercase variable when it is set at all (even empty), else the uppercase one."""
    if name in environ:
        return name, environ[name].strip()
    upper = name.upper()
    return upper, environ.get(upper, "").strip()


def _entries(no_proxy: str) -> list[str]:
    return [_plain(e) for e in no_proxy.replace(",", " ").split() if _plain(e)]


def _plain(host: str) -> str:
    """Lower case, no trailing dot; an IPv6 literal keeps its brackets only with a port."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port
        address, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return address, int(port) if port.isdigit() else None
    if entry.count(":") == 1:  # host:port (two or more colons: a bare IPv6 literal)
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
