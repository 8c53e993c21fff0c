"""Foreign exceptions are converted at one boundary each, and every class has a decision."""

from __future__ import annotations

import inspect

import pytest

from router import http1
from router.errors import (
    UpstreamConnectError,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from router.upstream import CLIENT_ERRORS, map_client_errors


def client_exception_classes() -> list[type[http1.HTTPError]]:
    return [
        obj
        for _, obj in inspect.getmembers(http1, inspect.isclass)
        if issubclass(obj, http1.HTTPError) and obj.__module__.startswith(http1.__name__)
    ]


def test_every_client_exception_class_has_its_own_row() -> None:
    rows = [source for source, _ in CLIENT_ERRORS]
    assert sorted(c.__name__ for c in client_exception_classes()) == sorted(c.__name__ for c in rows)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (http1.ConnectTimedOut("timed out connecting"), UpstreamTimeout),
        (http1.ConnectFailed("could not connect (ConnectionRefusedError)"), UpstreamConnectError),
        (http1.ConnectionLost("closed the connection mid-answer"), UpstreamConnectionLost),
        (http1.ProtocolViolation("broke the HTTP protocol (HttpParserError)"), UpstreamProtocolError),
        (http1.HTTPError("anything else"), UpstreamConnectionLost),
    ],
)
def test_client_failures_become_upstream_errors_naming_only_the_provider(
    exc: http1.HTTPError, expected: type[UpstreamError]
) -> None:
    with pytest.raises(UpstreamError) as caught, map_client_errors("trinity"):
        raise exc
    assert type(caught.value) is expected
    assert caught.value.provider == "trinity"
    assert caught.value.message == f"trinity: {exc}"


def test_the_mapping_does_not_swallow_other_exceptions() -> None:
    with pytest.raises(KeyError), map_client_errors("p"):
        raise KeyError("x")
