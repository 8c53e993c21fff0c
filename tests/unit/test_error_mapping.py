"""Foreign exceptions are converted at one boundary each, and every class has a decision."""

from __future__ import annotations

import inspect

import aiohttp
import httpx
import pytest

from router.aiohttp_transport import AIOHTTP_ERRORS, map_aiohttp_errors
from router.errors import UpstreamConnectionLost, UpstreamError, UpstreamTimeout
from router.upstream import HTTPX_ERRORS, map_httpx_errors


def exception_classes(module: object) -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__.startswith(module.__name__)
    ]  # type: ignore[attr-defined]


def test_every_httpx_exception_class_is_mapped_explicitly() -> None:
    unmapped = [cls.__name__ for cls in exception_classes(httpx) if cls not in HTTPX_ERRORS]
    assert unmapped == []


@pytest.mark.parametrize("cls", exception_classes(httpx))
def test_each_httpx_exception_becomes_an_upstream_error_naming_only_the_provider(
    cls: type[Exception],
) -> None:
    for args, kwargs in (
        (("details with a host 10.0.0.7:443",), {}),
        ((), {}),
        (("details with a host 10.0.0.7:443",), {"request": None, "response": None}),
    ):
        try:
            exc = cls(*args, **kwargs)
            break
        except TypeError:
            continue
    with pytest.raises(UpstreamError) as caught, map_httpx_errors("trinity"):
        raise exc
    assert caught.value.provider == "trinity"
    assert caught.value.message.startswith("trinity: ")
    assert "10.0.0.7" not in caught.value.message
    assert isinstance(caught.value, HTTPX_ERRORS[cls][0])


def test_timeouts_and_cuts_are_told_apart() -> None:
    with pytest.raises(UpstreamTimeout), map_httpx_errors("p"):
        raise httpx.ReadTimeout("slow")
    with pytest.raises(UpstreamConnectionLost), map_httpx_errors("p"):
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_every_aiohttp_client_error_has_a_row_more_specific_than_the_catch_all() -> None:
    specific = [source for source, _ in AIOHTTP_ERRORS if source is not aiohttp.ClientError]
    missing = [
        cls.__name__
        for cls in exception_classes(aiohttp)
        if issubclass(cls, aiohttp.ClientError)
        and cls is not aiohttp.ClientError
        and not any(issubclass(cls, row) for row in specific)
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            aiohttp.ServerDisconnectedError(),
            httpx.RemoteProtocolError,
        ),  # reset before headers, not a "timeout"
        (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.RemoteProtocolError),
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (ConnectionResetError(104, "reset"), httpx.ReadError),
    ],
)
def test_aiohttp_failures_map_to_what_happened(exc: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected), map_aiohttp_errors():
        raise exc


def test_the_mapping_does_not_swallow_other_exceptions() -> None:
    with pytest.raises(KeyError), map_aiohttp_errors():
        raise KeyError("x")
