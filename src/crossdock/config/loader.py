"""Load a project: YAML files (with ``include:``), ``${ENV}`` values, typed models, errors with file:line:key."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crossdock.config.models import ProjectConfig
from crossdock.config.yamlsource import KeyPath, Located, collect_secrets, interpolate_env, load_yaml
from crossdock.errors import ConfigError, ConfigErrors
from crossdock.redact import basic_pair, url_secrets

MERGED_SECTIONS = ("connections", "incomings", "transformers", "storages", "routes")


@dataclass
class LoadedConfig:
    """The validated config, where it lives, and what it must never print."""

    config: ProjectConfig
    path: Path
    source: Located
    secrets: set[str] = field(default_factory=set)
    #: with ``keep_going``: what was found wrong without stopping the load (shape errors of the named entries
    #: left out of ``config``, references to unknown shared incomings); the caller reports them with its own
    deferred_errors: list[ConfigError] = field(default_factory=list)
    #: (section, name) of those entries; references to them are not reported again as unknown
    left_out: set[tuple[str, str]] = field(default_factory=set)

    def left_out_names(self, section: str) -> set[str]:
        return {name for s, name in self.left_out if s == section}

    @property
    def root(self) -> Path:
        return self.path.parent

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return self.source.error(path, message)


def load_config(path: str | Path, environ: dict[str, str] | None = None, *, keep_going: bool = False) -> LoadedConfig:
    """Load and validate a project config. Raises ConfigErrors holding every problem found.

    With ``keep_going``, shape errors confined to named entries (a route, a connection ...) do not stop the load:
    those entries are left out and their errors returned in ``deferred_errors``, so the caller can check the rest
    (connectors, schedules, references) and report everything at once.
    """
    cfg_path = Path(path)
    located = load_yaml(cfg_path)
    if not isinstance(located.data, dict):
        raise ConfigErrors([ConfigError("the top level must be a mapping of keys", file=str(cfg_path), line=1)])
    errors: list[ConfigError] = []
    _merge_includes(located, cfg_path, errors)
    errors += interpolate_env(located, environ)
    collect_secrets(located)
    located.secrets |= credential_secrets(located.data)
    errors += _names_yaml_did_not_read_as_text(located)
    shape: list[ConfigError] = []
    left_out: set[tuple[str, str]] = set()
    try:
        config = ProjectConfig.model_validate(located.data)
    except ValidationError as exc:
        shown = [e for err in exc.errors() if (e := _union_error(err, located.data)) is not None]
        shape = [_from_pydantic(located, err) for err in shown]
        left_out = _named_entries(exc) if keep_going else set()
        partial = _validate_without(located.data, left_out) if left_out else None
        if partial is None:
            raise ConfigErrors(errors + shape) from None
        config = partial
    refs: list[ConfigError] = []
    for name, route in config.routes.items():
        if isinstance(route.incoming, str) and ("incomings", route.incoming) in left_out:
            continue
        if isinstance(route.incoming, str) and route.incoming not in config.incomings:
            known = ", ".join(sorted(config.incomings)) or "none defined"
            refs.append(
                located.error(
                    ("routes", name, "incoming"),
                    f"no shared incoming named {route.incoming!r} under incomings: (known: {known})",
                )
            )
    # include and ${ENV} problems leave the data incomplete: nothing after them would be worth reporting
    if errors or (refs and not keep_going):
        raise ConfigErrors(errors + shape + refs)
    return LoadedConfig(
        config=config,
        path=cfg_path,
        source=located,
        secrets=located.secrets,
        deferred_errors=shape + refs,
        left_out=left_out,
    )


#: sections whose keys are names the user chose
_NAMED_SECTIONS = ("connections", "incomings", "transformers", "storages", "routes")


def _names_yaml_did_not_read_as_text(located: Located) -> list[ConfigError]:
    """A route named ``off`` (or ``on``, ``yes``, ``no``, ``true``, ``null``, ``2024``) is not a name to YAML 1.1
    but a boolean, null or number. Say so at its line and show how to quote it, and leave the entry out, instead of
    pydantic's "Input should be a valid string"."""
    found: list[ConfigError] = []
    for section in _NAMED_SECTIONS:
        entries = located.data.get(section) if isinstance(located.data, dict) else None
        if not isinstance(entries, dict):
            continue
        for key in [k for k in entries if not isinstance(k, str)]:
            written = next(
                (
                    p[1]
                    for p in located.lines
                    if len(p) == 2 and p[0] == section and isinstance(p[1], str) and _same(_yaml_reads(p[1]), key)
                ),
                str(key),
            )
            kind = "a boolean" if isinstance(key, bool) else "null" if key is None else "a number"
            file, line = located.where((section, written))
            found.append(
                ConfigError(
                    f"YAML reads the unquoted name {written} as {kind} ({key!r}), not as a name; quote it: "
                    f'"{written}":',
                    file=file,
                    line=line,
                    key=f"{section}.{written}",
                )
            )
            del entries[key]
    return found


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # False == 0 in Python; not here


def _yaml_reads(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def credential_secrets(data: Any) -> set[str]:
    """Secrets that no single key holds: ``user:password`` of basic auth (what its header encodes), the client
    credentials pair of OAuth2 basic client auth, and the password inside any ``scheme://user:password@host``
    value (``database:``, a SQL or AMQP connection's ``url:``, a ``base_url:``)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            user, password = value.get("username"), value.get("password")
            if isinstance(user, str) and isinstance(password, str) and password:
                found.add(basic_pair(user, password))
            client, secret = value.get("client_id"), value.get("client_secret")
            if isinstance(client, str) and isinstance(secret, str) and secret:
                found.add(basic_pair(client, secret))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and "://" in value:
            found.update(url_secrets(value))

    walk(data)
    return found


def _named_entries(exc: ValidationError) -> set[tuple[str, str]]:
    """The (section, name) entries holding every error of ``exc``; empty if any error lies outside them."""
    entries = set()
    for err in exc.errors():
        loc = _key_path(err)
        if len(loc) < 2 or loc[0] not in MERGED_SECTIONS or not isinstance(loc[1], str):
            return set()
        entries.add((str(loc[0]), loc[1]))
    return entries


def _validate_without(data: dict[str, Any], left_out: set[tuple[str, str]]) -> ProjectConfig | None:
    pruned = dict(data)
    for section, name in left_out:
        body = pruned.get(section)
        if isinstance(body, dict):
            pruned[section] = {k: v for k, v in body.items() if k != name}
    try:
        return ProjectConfig.model_validate(pruned)
    except ValidationError:
        return None


def _merge_includes(located: Located, cfg_path: Path, errors: list[ConfigError]) -> None:
    includes = located.data.get("include") or []
    if not isinstance(includes, list):
        errors.append(located.error(("include",), "must be a list of file paths or globs"))
        return
    for i, pattern in enumerate(includes):
        matches = sorted(glob.glob(str(cfg_path.parent / str(pattern))))
        if not matches:
            errors.append(located.error(("include", i), f"no file matches {pattern!r}"))
        for match in matches:
            try:
                part = load_yaml(Path(match))
            except ConfigError as exc:
                errors.append(exc)
                continue
            if not isinstance(part.data, dict):
                errors.append(ConfigError("an included file must be a mapping", file=match, line=1))
                continue
            for section, body in part.data.items():
                if section not in MERGED_SECTIONS or not isinstance(body, dict):
                    errors.append(
                        part.error(
                            (section,),
                            f"an included file may only hold mappings under {', '.join(MERGED_SECTIONS)}",
                        )
                    )
                    continue
                target = located.data.setdefault(section, {})
                for name, value in body.items():
                    if name in target:
                        errors.append(part.error((section, name), f"{section}.{name} is defined twice"))
                        continue
                    target[name] = value
                    for key, where in part.lines.items():
                        if key[:2] == (section, name):
                            located.lines[key] = where


def _key_path(err: Any) -> KeyPath:
    """The config keys of a pydantic error (without pydantic's own tags, with our key names)."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _PYDANTIC_TAGS))
    return tuple(_ALIASES.get(p, p) if isinstance(p, str) else p for p in loc)


def _from_pydantic(located: Located, err: Any) -> ConfigError:
    loc = _key_path(err)
    kind = err["type"]
    if kind == "extra_forbidden":
        message = "unknown key; check the spelling (see docs/config.md)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
    return located.error(loc, message)


_PYDANTIC_TAGS = {
    "str",
    "IncomingConfig",
    "list[str]",
    "function-after[_names(), dict[str,RouteConfig]]",
    "list[any]",
    "NamedTransformer",
}
#: a value that may be written in either of two forms: pydantic's tag for each, and the Python type of the other
_OTHER_FORM = {"list[any]": dict, "NamedTransformer": list}


def _union_error(err: Any, data: Any) -> Any | None:
    """Keep only the errors worth showing of a value with two forms (a named transformer is a list of steps or a
    mapping with ``steps:``): those of the form the user chose, or one plain error if it is neither."""
    loc = err["loc"]
    for i, part in enumerate(loc):
        if isinstance(part, str) and part in _OTHER_FORM:
            value = data
            for key in loc[:i]:
                if isinstance(key, str) and key in _PYDANTIC_TAGS:
                    continue
                try:
                    value = value[key]
                except (KeyError, IndexError, TypeError):
                    return err
            if isinstance(value, _OTHER_FORM[part]):
                return None
            if not isinstance(value, (list, dict)):
                # neither form: one error, not one per form in pydantic's words
                if part != "list[any]":
                    return None
                return {**err, "msg": "must be a list of steps, or a mapping with steps:"}
            return err
    return err


_ALIASES = {"validate_": "validate", "schema_": "schema", "from_": "from"}


def read_database_url(path: str | Path, environ: dict[str, str] | None = None) -> str | None:
    """Only the ``database:`` key, so commands that read tasks need no source or target secrets."""
    located = load_yaml(Path(path))
    if not isinstance(located.data, dict):
        return None
    url = located.data.get("database")
    if url is None:
        return None
    located.data = {"database": url}
    errors = interpolate_env(located, environ)
    if errors:
        raise ConfigErrors(errors)
    return str(located.data["database"])


def route_names(path: str | Path) -> list[str]:
    """The route names of a config without validating the rest (for listing empty routes in stats)."""
    located = load_yaml(Path(path))
    routes = located.data.get("routes") if isinstance(located.data, dict) else None
    return [str(r) for r in routes] if isinstance(routes, dict) else []
