"""Load a project: YAML files (with ``include:``), ``${ENV}`` and ``${file:...}`` values, typed models, errors with
file:line:key."""

from __future__ import annotations

import datetime
import glob
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crossdock.config.models import ProjectConfig
from crossdock.config.yamlsource import KeyPath, Located, collect_secrets, dotted, interpolate_env, load_yaml
from crossdock.errors import ConfigError, ConfigErrors
from crossdock.redact import Redactor, basic_pair, url_secrets

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
    errors += interpolate_env(located, environ, root=cfg_path.parent)
    collect_secrets(located)
    located.secrets |= credential_secrets(located.data)
    located.secrets |= alert_channel_secrets(located.data)
    misread: set[tuple[str, str]] = set()
    errors += _names_yaml_did_not_read_as_text(located, misread)
    errors += _references_yaml_did_not_read_as_text(located)
    # a message may quote a value (a duration, an expression): one read from a secret file must not show
    hide = Redactor(located.secrets)
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
            raise ConfigErrors(redact_errors(errors + shape, hide)) from None
        config = partial
    refs: list[ConfigError] = []
    #: entries left out for errors of their own: references to them are not reported again
    unseen = left_out | misread
    for name, route in config.routes.items():
        if isinstance(route.incoming, str) and ("incomings", route.incoming) in unseen:
            continue
        if isinstance(route.incoming, str) and route.incoming not in config.incomings:
            known = ", ".join(sorted(config.incomings)) or "none defined"
            refs.append(
                located.error(
                    ("routes", name, "incoming"),
                    f"no shared incoming named {route.incoming!r} under incomings: (known: {known})",
                )
            )
    for i, rule in enumerate(config.alerts.rules):
        for channel in rule.channels:
            if channel not in config.alerts.channels and ("alerts.channels", channel) not in unseen:
                known = ", ".join(sorted(config.alerts.channels)) or "none defined"
                refs.append(
                    located.error(
                        ("alerts", "rules", i, "channels"),
                        f"no channel named {channel!r} under alerts.channels (known: {known})",
                    )
                )
        for route_name in rule.routes or ():
            if route_name not in config.routes and ("routes", route_name) not in unseen:
                known = ", ".join(sorted(config.routes)) or "none defined"
                refs.append(
                    located.error(("alerts", "rules", i, "routes"), f"no route named {route_name!r} (known: {known})")
                )
    # include, ${ENV}, ${file:...} and misread-name problems leave the data incomplete: nothing after them would be
    # worth reporting
    if errors or (refs and not keep_going):
        raise ConfigErrors(redact_errors(errors + shape + refs, hide))
    return LoadedConfig(
        config=config,
        path=cfg_path,
        source=located,
        secrets=located.secrets,
        deferred_errors=shape + refs,
        left_out=left_out,
    )


def redact_errors(errors: list[ConfigError], redact: Callable[[str], str]) -> list[ConfigError]:
    """The errors with the config's secrets masked in their messages (they go to stderr, JSON and CI logs)."""
    return [ConfigError(redact(e.detail), file=e.file, line=e.line, key=e.key) for e in errors]


#: where the keys are names the user chose: the top-level sections, and the alert channels
_NAMED_SECTIONS: tuple[KeyPath, ...] = (
    ("connections",),
    ("incomings",),
    ("transformers",),
    ("storages",),
    ("routes",),
    ("alerts", "channels"),
)


def _names_yaml_did_not_read_as_text(located: Located, misread: set[tuple[str, str]]) -> list[ConfigError]:
    """A route named ``off`` (or ``on``, ``yes``, ``no``, ``true``, ``null``, ``2024``, ``2024-01-31``) is not a name
    to YAML 1.1 but a boolean, null, number or date. Say so at its line and show how to quote it, and leave the
    entry out (recorded in ``misread`` as (dotted section, name as written), so references to it are not reported
    again), instead of pydantic's "Input should be a valid string"."""
    found: list[ConfigError] = []
    for section in _NAMED_SECTIONS:
        entries = _at(located.data, section)
        if not isinstance(entries, dict):
            continue
        for key in [k for k in entries if not isinstance(k, str)]:
            written = next(
                (
                    str(p[-1])
                    for p in located.lines
                    if len(p) == len(section) + 1 and p[:-1] == section and _written_as(p[-1], key)
                ),
                str(key),
            )
            file, line = located.where((*section, written))
            misread.add((dotted(section), written))
            found.append(
                ConfigError(
                    f'YAML reads the unquoted name {written} as {_kind(key)}, not as a name; quote it: "{written}":',
                    file=file,
                    line=line,
                    key=dotted((*section, written)),
                )
            )
            del entries[key]
    return found


def _reference_to(path: KeyPath) -> str | None:
    """What the value at ``path`` names, when it is a reference to a named entry (else None)."""
    if not path or path[0] not in ("routes", "incomings", "transformers", "alerts"):
        return None
    last = path[-1]
    if path[0] == "routes" and len(path) == 3 and last == "incoming":
        return "a shared incoming"
    if last == "connection" and path[0] != "alerts":
        return "a connection"
    if len(path) >= 2 and isinstance(path[-2], int) and last == "use":
        return "a transformer"
    if len(path) >= 3 and isinstance(path[-3], int) and path[-2] == "use" and last == "name":
        return "a transformer"
    if len(path) >= 3 and isinstance(path[-3], int) and path[-2] in ("lookup", "save") and last == "storage":
        return "a storage"
    if len(path) == 5 and path[:2] == ("alerts", "rules") and path[3] in ("routes", "channels"):
        return "a route" if path[3] == "routes" else "an alert channel"
    return None


def _references_yaml_did_not_read_as_text(located: Located) -> list[ConfigError]:
    """``incoming: off``, ``connection: yes``, ``use: no``, ``routes: [2024]``: the name YAML made a boolean, null or
    number of, where the name of an entry belongs. Say so, and go on with the name as written, so that the same
    mistake is not reported again as "Input should be a valid string" or "no connection named True"."""
    found: list[ConfigError] = []
    for path, written in sorted(located.written.items(), key=lambda item: _place(located, item[0])):
        what = _reference_to(path)
        if what is None:
            continue
        parent = _at(located.data, path[:-1])
        key = path[-1]
        here = (isinstance(parent, dict) and key in parent) or (
            isinstance(parent, list) and isinstance(key, int) and key < len(parent)
        )
        value = parent[key] if here else _yaml_reads(written)
        if isinstance(value, str):
            continue
        if here:
            parent[key] = written
        quoted = f'"{written}"' if isinstance(key, int) else f'{key}: "{written}"'
        found.append(
            located.error(
                path,
                f"YAML reads the unquoted {written} as {_kind(value)}, not as the name of {what}; quote it: {quoted}",
            )
        )
    return found


def _place(located: Located, path: KeyPath) -> tuple[str, int]:
    file, line = located.where(path)
    return file or "", line or 0


def _at(data: Any, path: KeyPath) -> Any:
    """The value at ``path`` in plain data, or None."""
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _kind(value: Any) -> str:
    """What YAML made of a word, with the value: ``a boolean (False)``, ``a date (2024-01-31)``."""
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if value is None:
        return "null (None)"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"a date ({value.isoformat()})"
    return f"a number ({value!r})"


def _written_as(text: Any, key: Any) -> bool:
    """Whether a key written as ``text`` is what YAML made ``key`` of (``off`` for False, ``.nan`` for nan)."""
    if not isinstance(text, str):
        return False
    if isinstance(key, str):
        return text == key
    read = _yaml_reads(text)
    if type(read) is not type(key):  # False == 0 in Python; not here
        return False
    return read == key or (isinstance(key, float) and math.isnan(key) and math.isnan(read))


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


def alert_channel_secrets(data: Any) -> set[str]:
    """A chat incoming-webhook URL is a credential in itself (anyone holding it can post): keep it out of output."""
    alerts = data.get("alerts") if isinstance(data, dict) else None
    channels = alerts.get("channels") if isinstance(alerts, dict) else None
    if not isinstance(channels, dict):
        return set()
    return {
        c["url"]
        for c in channels.values()
        if isinstance(c, dict) and c.get("type") == "slack" and isinstance(c.get("url"), str) and len(c["url"]) >= 8
    }


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
                    # lines and written texts are keyed by the name as written, which YAML may have made a boolean
                    for key, where in part.lines.items():
                        if len(key) >= 2 and key[0] == section and _written_as(key[1], name):
                            located.lines[key] = where
                    for key, text in part.written.items():
                        if len(key) >= 2 and key[0] == section and _written_as(key[1], name):
                            located.written[key] = text


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
    return read_database(path, environ)[0]


def read_database(path: str | Path, environ: dict[str, str] | None = None) -> tuple[str | None, set[str]]:
    """The ``database:`` key alone, and the secrets its ``${...}`` values gave (a password read from a file)."""
    cfg_path = Path(path)
    located = load_yaml(cfg_path)
    if not isinstance(located.data, dict):
        return None, set()
    url = located.data.get("database")
    if url is None:
        return None, set()
    located.data = {"database": url}
    errors = interpolate_env(located, environ, root=cfg_path.parent)
    if errors:
        raise ConfigErrors(redact_errors(errors, Redactor(located.secrets)))
    return str(located.data["database"]), located.secrets


def route_names(path: str | Path) -> list[str]:
    """The route names of a config without validating the rest (for listing empty routes in stats)."""
    located = load_yaml(Path(path))
    routes = located.data.get("routes") if isinstance(located.data, dict) else None
    return [str(r) for r in routes] if isinstance(routes, dict) else []
