"""Which connector a ``type:`` names. Built-ins are listed here; plugins register through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from crossdock.connectors.base import Options, Source, Target

ENTRY_POINT_GROUP = "crossdock.connectors"

_BUILTIN_SOURCES = {
    "file": "crossdock.connectors.files:FileSource",
    "http": "crossdock.connectors.http:HttpSource",
    "sftp": "crossdock.connectors.sftp:SftpSource",
    "webhook": "crossdock.connectors.webhook:WebhookSource",
}
_BUILTIN_TARGETS = {
    "file": "crossdock.connectors.files:FileTarget",
    "http": "crossdock.connectors.http:HttpTarget",
    "noop": "crossdock.connectors.noop:NoopTarget",
    "sftp": "crossdock.connectors.sftp:SftpTarget",
}
_BUILTIN_CONNECTIONS = {
    "http": "crossdock.connectors.http:HttpConnectionOptions",
    "sftp": "crossdock.connectors.sftp:SftpConnectionOptions",
}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


def _plugins(kind: str) -> dict[str, str]:
    """Entry points named ``source.TYPE``, ``target.TYPE`` or ``connection.TYPE``."""
    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        prefix, _, name = ep.name.partition(".")
        if prefix == kind and name:
            found[name] = ep.value
    return found


def source_types() -> dict[str, str]:
    return {**_plugins("source"), **_BUILTIN_SOURCES}


def target_types() -> dict[str, str]:
    return {**_plugins("target"), **_BUILTIN_TARGETS}


def connection_types() -> dict[str, str]:
    return {**_plugins("connection"), **_BUILTIN_CONNECTIONS}


def source_class(kind: str) -> type[Source]:
    return _resolve(source_types(), kind, "source")  # type: ignore[no-any-return]


def target_class(kind: str) -> type[Target]:
    return _resolve(target_types(), kind, "target")  # type: ignore[no-any-return]


def connection_model(kind: str) -> type[Options]:
    return _resolve(connection_types(), kind, "connection")  # type: ignore[no-any-return]


def _resolve(table: dict[str, str], kind: str, what: str) -> Any:
    if kind not in table:
        raise KeyError(f"unknown {what} type {kind!r}; installed: {', '.join(sorted(table))}")
    return _load(table[kind])
