"""A loaded project: config compiled into runnable routes, with every problem reported at once."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from croniter import croniter
from pydantic import ValidationError

from crossdock.config import (
    CircuitConfig,
    IncomingConfig,
    LoadedConfig,
    MaintenanceWindow,
    RouteConfig,
    load_config,
)
from crossdock.config.loader import redact_errors
from crossdock.config.models import GATE_KEYS
from crossdock.config.yamlsource import KeyPath
from crossdock.connectors.base import ConnectorContext, Options, Source, Target
from crossdock.connectors.registry import connection_model, source_class, target_class
from crossdock.errors import ConfigError, ConfigErrors, StepConfigError, UsageError
from crossdock.redact import Redactor
from crossdock.transform import Pipeline, compile_identifier, compile_steps

PRIORITIES = {"high": 10, "medium": 5, "low": 0}
#: how often a task may be lost to a dying worker before it is failed, on routes without retry:
CRASH_ATTEMPTS = 3


@dataclass
class CompiledIncoming:
    name: str
    config: IncomingConfig
    source_class: type[Source]
    source_options: Options
    pipeline: Pipeline
    #: False for a route's inline incoming
    shared: bool
    path: KeyPath
    #: the windows of the source's connection (``connections.NAME.maintenance``); ``imports: false`` ones stop reading
    maintenance: tuple[MaintenanceWindow, ...] = ()


@dataclass
class CompiledRoute:
    name: str
    config: RouteConfig
    incoming: CompiledIncoming
    pipeline: Pipeline
    identifier: Callable[[Mapping[str, Any]], str | None]
    schema_validator: Any
    target_class: type[Target]
    target_options: Options
    outgoing_pipeline: Pipeline
    #: the circuit breaker's settings: the route's ``outgoing.circuit``, else its target connection's; None: no breaker
    circuit: CircuitConfig | None = None
    #: the breaker's key: the target's connection (every route sending to it shares one breaker), else the route
    circuit_key: str = ""
    #: the route's ``maintenance:`` windows and those of its target's connection
    maintenance: tuple[MaintenanceWindow, ...] = ()

    @property
    def max_attempts(self) -> int:
        return self.config.retry.max_attempts if self.config.retry else CRASH_ATTEMPTS

    @property
    def priority(self) -> int:
        return PRIORITIES[self.config.priority]


class StorageBridge:
    """Gives ``lookup`` and ``save`` steps the store's storages once a store is bound (pipelines compile first)."""

    def __init__(self, ttls: Mapping[str, float | None]) -> None:
        self.ttls = dict(ttls)
        self.store: Any = None

    def _bound(self, storage: str) -> Any:
        if self.store is None:
            raise RuntimeError(f"storage {storage!r} is used before a database is open")
        if storage not in self.ttls:
            raise RuntimeError(f"no storage named {storage!r} under storages:")
        return self.store

    def storage_get(self, storage: str, key: str) -> Any | None:
        return self._bound(storage).storage_get(storage, key, now=datetime.now(UTC))

    def storage_put(self, storage: str, key: str, value: Any) -> None:
        self._bound(storage).storage_put(storage, key, value, now=datetime.now(UTC), ttl=self.ttls[storage])


@dataclass
class Project:
    loaded: LoadedConfig
    routes: dict[str, CompiledRoute] = field(default_factory=dict)
    incomings: dict[str, CompiledIncoming] = field(default_factory=dict)
    connections: dict[str, Options] = field(default_factory=dict)
    redact: Redactor = field(default_factory=Redactor)
    storages: StorageBridge = field(default_factory=lambda: StorageBridge({}))

    def bind_store(self, store: Any) -> None:
        """Let transformer steps reach the storages of this store."""
        self.storages.store = store

    @property
    def root(self) -> Path:
        return self.loaded.root

    @property
    def path(self) -> Path:
        return self.loaded.path

    def database_url(self, override: str | None = None) -> str:
        return override or os.environ.get("CROSSDOCK_DB") or self.loaded.config.database or "sqlite:///crossdock.db"

    def context(self, clients: dict[str, Any] | None = None) -> ConnectorContext:
        return ConnectorContext(
            root=self.root,
            connections=self.connections,
            redact=self.redact,
            clients=clients if clients is not None else {},
        )

    def route(self, name: str) -> CompiledRoute:
        if name not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none"
            raise UsageError(f"no route named {name!r} in {self.path} (routes: {known})")
        return self.routes[name]

    def routes_of(self, incoming: CompiledIncoming) -> list[CompiledRoute]:
        return [r for r in self.routes.values() if r.incoming is incoming]

    def active_routes(self, store: Any) -> set[str]:
        """Routes that run: the store's override (dashboard, API, auto-pause) wins over the config's ``active``."""
        overrides = store.route_states()
        return {name for name, route in self.routes.items() if effective_active(route, overrides)}

    def max_attempts(self) -> dict[str, int]:
        return {name: r.max_attempts for name, r in self.routes.items()}


def load_project(path: str | Path, environ: dict[str, str] | None = None) -> Project:
    """Load, validate and compile a project. Raises ConfigErrors listing every problem."""
    # a shape error in one entry does not hide the connector, schedule and reference errors of the others
    loaded = load_config(path, environ, keep_going=True)
    ttls: dict[str, float | None] = {k: v.ttl for k, v in loaded.config.storages.items()}
    ttls.update(dict.fromkeys(loaded.left_out_names("storages")))  # known, so lookups naming them are not errors
    project = Project(loaded=loaded, redact=Redactor(loaded.secrets), storages=StorageBridge(ttls))
    errors: list[ConfigError] = list(loaded.deferred_errors)
    cfg = loaded.config
    _load_plugins(project, errors)
    for name, spec in cfg.connections.items():
        # circuit: and maintenance: are crossdock's, not the connector type's: its model never sees them
        data = spec.model_dump(exclude=set(GATE_KEYS))
        options = _options(loaded, ("connections", name), connection_model, data, errors)
        if options is not None:
            project.connections[name] = options
    for name, inc in cfg.incomings.items():
        compiled = _incoming(project, name, inc, ("incomings", name), True, errors)
        if compiled is not None:
            project.incomings[name] = compiled
    for name, named in cfg.transformers.items():
        _steps(project, cfg.transformer_steps()[name], _named_path(name, named), errors)
    for name, route in cfg.routes.items():
        compiled_route = _route(project, name, route, errors)
        if compiled_route is not None:
            project.routes[name] = compiled_route
    if errors:
        raise ConfigErrors(redact_errors(errors, project.redact))
    return project


def _load_plugins(project: Project, errors: list[ConfigError]) -> None:
    root = str(project.root)
    if project.loaded.config.plugins and root not in sys.path:
        sys.path.insert(0, root)
    for i, module in enumerate(project.loaded.config.plugins):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a plugin may fail in any way; report it as a config error
            errors.append(project.loaded.error(("plugins", i), f"cannot import {module!r}: {exc}"))


def _options(
    loaded: LoadedConfig,
    path: KeyPath,
    resolver: Callable[[str], type[Options]],
    data: dict[str, Any],
    errors: list[ConfigError],
) -> Options | None:
    try:
        model = resolver(data["type"])
    except KeyError as exc:
        errors.append(loaded.error((*path, "type"), str(exc.args[0])))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            msg = "unknown key; check the spelling" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(loaded.error((*path, *loc), msg.removeprefix("Value error, ")))
        return None


def _steps(project: Project, steps: list[Any], path: KeyPath, errors: list[ConfigError]) -> Pipeline | None:
    named = project.loaded.config.transformer_steps()
    # transformers left out for their own errors still exist: steps that use them are not wrong for it
    named.update({name: [] for name in project.loaded.left_out_names("transformers")})
    try:
        return compile_steps(steps, named=named, storages=project.storages)
    except StepConfigError as exc:
        errors.append(project.loaded.error((*path, *exc.path), exc.message))
        return None


def _named_path(name: str, named: Any) -> KeyPath:
    return ("transformers", name) if isinstance(named, list) else ("transformers", name, "steps")


def _cron(project: Project, expr: str | None, path: KeyPath, errors: list[ConfigError]) -> None:
    if expr is not None and not croniter.is_valid(expr):
        errors.append(project.loaded.error(path, f"{expr!r} is not a valid cron expression (e.g. '*/5 * * * *')"))


def _incoming(
    project: Project, name: str, inc: IncomingConfig, path: KeyPath, shared: bool, errors: list[ConfigError]
) -> CompiledIncoming | None:
    data = inc.source.model_dump()
    _check_connection(project, data.get("connection"), (*path, "source", "connection"), errors)
    options = _options(project.loaded, (*path, "source"), _source_model, data, errors)
    pipeline = _steps(project, inc.transform, (*path, "transform"), errors)
    _cron(project, inc.schedule, (*path, "schedule"), errors)
    if options is None or pipeline is None:
        return None
    windows = _connection_windows(project, data.get("connection"))
    return CompiledIncoming(name, inc, source_class(data["type"]), options, pipeline, shared, path, windows)


def _connection_windows(project: Project, name: Any) -> tuple[MaintenanceWindow, ...]:
    spec = project.loaded.config.connections.get(name) if isinstance(name, str) else None
    return tuple(spec.maintenance) if spec is not None else ()


def _source_model(kind: str) -> type[Options]:
    return source_class(kind).options_model


def _target_model(kind: str) -> type[Options]:
    return target_class(kind).options_model


def _route(project: Project, name: str, route: RouteConfig, errors: list[ConfigError]) -> CompiledRoute | None:
    path: KeyPath = ("routes", name)
    loaded = project.loaded
    if isinstance(route.incoming, str):
        incoming = project.incomings.get(route.incoming)
    else:
        incoming = _incoming(project, name, route.incoming, (*path, "incoming"), False, errors)
    pipeline = _steps(project, route.transform, (*path, "transform"), errors)
    out_pipeline = _steps(project, route.outgoing.transform, (*path, "outgoing", "transform"), errors)
    target_data = route.outgoing.target.model_dump()
    target_options = _options(loaded, (*path, "outgoing", "target"), _target_model, target_data, errors)
    _cron(project, route.outgoing.schedule, (*path, "outgoing", "schedule"), errors)
    try:
        identifier = compile_identifier(route.identifier)
    except StepConfigError as exc:
        errors.append(loaded.error((*path, "identifier"), exc.message))
        return None
    validator = _schema(project, route, path, errors)
    for conn_path, conn in _connection_refs(route):
        if conn is not None and not _known_connection(project, conn):
            known = ", ".join(sorted(project.loaded.config.connections)) or "none defined"
            errors.append(loaded.error((*path, *conn_path), f"no connection named {conn!r} (known: {known})"))
    if incoming is None or pipeline is None or out_pipeline is None or target_options is None:
        return None
    connection = target_data.get("connection")
    spec = loaded.config.connections.get(connection) if isinstance(connection, str) else None
    circuit = route.outgoing.circuit or (spec.circuit if spec is not None else None)
    return CompiledRoute(
        name=name,
        config=route,
        incoming=incoming,
        pipeline=pipeline,
        identifier=identifier,
        schema_validator=validator,
        target_class=target_class(target_data["type"]),
        target_options=target_options,
        outgoing_pipeline=out_pipeline,
        circuit=circuit,
        circuit_key=connection if isinstance(connection, str) and spec is not None else name,
        maintenance=(*route.maintenance, *_connection_windows(project, connection)),
    )


def _connection_refs(route: RouteConfig) -> list[tuple[KeyPath, str | None]]:
    """Connections a route's target names (its incoming's source is checked with the incoming)."""
    return [(("outgoing", "target", "connection"), (route.outgoing.target.model_extra or {}).get("connection"))]


def _check_connection(project: Project, name: Any, path: KeyPath, errors: list[ConfigError]) -> None:
    if isinstance(name, str) and not _known_connection(project, name):
        known = ", ".join(sorted(project.loaded.config.connections)) or "none defined"
        errors.append(project.loaded.error(path, f"no connection named {name!r} (known: {known})"))


def _known_connection(project: Project, name: str) -> bool:
    """Defined, even if left out of the config for errors of its own (those are reported already)."""
    return name in project.loaded.config.connections or name in project.loaded.left_out_names("connections")


def _schema(project: Project, route: RouteConfig, path: KeyPath, errors: list[ConfigError]) -> Any:
    schema_file = route.validate_.schema_
    if not schema_file:
        return None
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    key = (*path, "validate", "schema")
    file = project.root / schema_file
    try:
        schema = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        errors.append(project.loaded.error(key, f"schema file {schema_file} not found (looked in {project.root})"))
        return None
    except orjson.JSONDecodeError as exc:
        errors.append(project.loaded.error(key, f"{schema_file} is not valid JSON: {exc}"))
        return None
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        errors.append(project.loaded.error(key, f"{schema_file} is not a valid JSON Schema: {exc.message}"))
        return None
    return cls(schema, format_checker=FormatChecker())


def effective_active(route: CompiledRoute, states: Mapping[str, Any]) -> bool:
    """The database's override (a ``RouteState``) if there is one, else the config's ``active``."""
    state = states.get(route.name)
    if state is not None and state.active is not None:
        return bool(state.active)
    return route.config.active
