"""Which connector a ``type:`` names. Built-ins are listed here; plugins register through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from crossdock.connectors.base import Options, Source, Target

ENTRY_POINT_GROUP = "crossdock.connectors"

_BUILTIN_SOURCES = {
    "file": "crossdock.connectors.files:FileSource",
    "http": "crossdock.connectors.http:HttpSource",
    "sql": "crossdock.connectors.sql:SqlSource",
    "amqp": "crossdock.connectors.amqp:AmqpSource",
    "sftp": "crossdock.connectors.sftp:SftpSource",
    "webhook": "crossdock.connectors.webhook:WebhookSource",
}
_BUILTIN_TARGETS = {
    "file": "crossdock.connectors.files:FileTarget",
    "http": "crossdock.connectors.http:HttpTarget",
    "noop": "crossdock.connectors.noop:NoopTarget",
    "sql": "crossdock.connectors.sql:SqlTarget",
    "amqp": "crossdock.connectors.amqp:AmqpTarget",
    "sftp": "crossdock.connectors.sftp:SftpTarget",
}
_BUILTIN_CONNECTIONS = {
    "http": "crossdock.connectors.http:HttpConnectionOptions",
    "sql": "crossdock.connectors.sql:SqlConnectionOptions",
    "amqp": "crossdock.connectors.amqp:AmqpConnectionOptions",
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


def installed() -> dict[str, list[dict[str, Any]]]:
    """Every source, target and connection type this Python environment offers, with its option names.

    For ``crossdock connectors``: a plugin that cannot be imported is listed with its error rather than hiding
    the others, since that is exactly when someone runs the command.
    """
    origins: dict[tuple[str, str], str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        prefix, _, name = ep.name.partition(".")
        dist = getattr(ep, "dist", None)
        origins[(prefix, name)] = f"plugin {dist.name}" if dist is not None else "plugin"
    listing: dict[str, list[dict[str, Any]]] = {}
    for kind, table, builtins in (
        ("source", source_types(), _BUILTIN_SOURCES),
        ("target", target_types(), _BUILTIN_TARGETS),
        ("connection", connection_types(), _BUILTIN_CONNECTIONS),
    ):
        rows = []
        for name in sorted(table):
            row: dict[str, Any] = {
                "type": name,
                "origin": "built-in" if name in builtins else origins.get((kind, name), "plugin"),
                "ref": table[name],
            }
            try:
                obj = _load(table[name])
                model = obj if kind == "connection" else obj.options_model
                row["options"] = [f.alias or key for key, f in model.model_fields.items() if key != "type"]
            except Exception as exc:  # a broken plugin is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
        listing[kind + "s"] = rows
    return listing
