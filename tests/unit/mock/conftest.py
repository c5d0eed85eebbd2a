"""Fixtures for the mock systems: servers on ephemeral ports and a tiny sync HTTP client."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from crossdock.mock import RunningErp, RunningShop, start_erp, start_shop


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One request with urllib; HTTP errors come back as a Reply, not an exception."""
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and not request.has_header("Content-type"):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers), error.read())


@pytest.fixture
def erp() -> Iterator[RunningErp]:
    with start_erp(products=250, seed=7) as running:
        yield running


@pytest.fixture
def shop() -> Iterator[RunningShop]:
    with start_shop() as running:
        yield running


Call = Any  # the signature of `call`; fixtures hand it out so tests need no import from conftest


@pytest.fixture
def http() -> Call:
    return call
