"""Load a project: YAML files (with ``include:``), ``${ENV}`` values, typed models, errors with file:line:key."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crossdock.config.models import ProjectConfig
from crossdock.config.yamlsource import KeyPath, Located, collect_secrets, interpolate_env, load_yaml
from crossdock.errors import ConfigError, ConfigErrors

MERGED_SECTIONS = ("connections", "incomings", "transformers", "storages", "routes")


@dataclass
class LoadedConfig:
    """The validated config, where it lives, and what it must never print."""

    config: ProjectConfig
    path: Path
    source: Located
    secrets: set[str] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return self.path.parent

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return self.source.error(path, message)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Load and validate a project config. Raises ConfigErrors holding every problem found."""
    cfg_path = Path(path)
    located = load_yaml(cfg_path)
    if not isinstance(located.data, dict):
        raise ConfigErrors([ConfigError("the top level must be a mapping of keys", file=str(cfg_path), line=1)])
    errors: list[ConfigError] = []
    _merge_includes(located, cfg_path, errors)
    errors += interpolate_env(located, environ)
    collect_secrets(located)
    try:
        config = ProjectConfig.model_validate(located.data)
    except ValidationError as exc:
        errors += [_from_pydantic(located, err) for err in exc.errors()]
        raise ConfigErrors(errors) from None
    for name, route in config.routes.items():
        if isinstance(route.incoming, str) and route.incoming not in config.incomings:
            known = ", ".join(sorted(config.incomings)) or "none defined"
            errors.append(
                located.error(
                    ("routes", name, "incoming"),
                    f"no shared incoming named {route.incoming!r} under incomings: (known: {known})",
                )
            )
    if errors:
        raise ConfigErrors(errors)
    return LoadedConfig(config=config, path=cfg_path, source=located, secrets=located.secrets)


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


def _from_pydantic(located: Located, err: Any) -> ConfigError:
    loc: KeyPath = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _PYDANTIC_TAGS))
    loc = tuple(_ALIASES.get(p, p) if isinstance(p, str) else p for p in loc)
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


_PYDANTIC_TAGS = {"str", "IncomingConfig", "list[str]", "function-after[_names(), dict[str,RouteConfig]]"}
_ALIASES = {"validate_": "validate", "schema_": "schema"}


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
