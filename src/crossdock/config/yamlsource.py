"""Read YAML while remembering where every key came from, so errors can name file and line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crossdock.errors import ConfigError

KeyPath = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Located:
    """Parsed YAML data plus a (file, line) for every key path in it."""

    data: Any
    lines: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)
    #: values that came from the environment; redacted wherever text leaves the process
    secrets: set[str] = field(default_factory=set)

    def where(self, path: KeyPath) -> tuple[str | None, int | None]:
        """The closest known location of ``path`` (walking up to its parents)."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None, None
            p = p[:-1]

    def error(self, path: KeyPath, message: str) -> ConfigError:
        file, line = self.where(path)
        return ConfigError(message, file=file, line=line, key=dotted(path) or None)


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_yaml(path: Path) -> Located:
    """Parse one YAML file. Syntax errors become a ConfigError naming the line."""
    text = _read(path)
    display = str(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem}", file=display, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=display) from None
    located = Located(data if data is not None else {})
    if node is not None:
        _record_lines(node, (), display, located.lines)
    return located


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; create it with `crossdock init DIR` or pass -c PATH", file=str(path)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None


def _record_lines(node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, tuple[str, int]]) -> None:
    out.setdefault(path, (file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            out[child] = (file, key_node.start_mark.line + 1)
            _record_lines(value_node, child, file, out)
            out[child] = (file, key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), file, out)


def interpolate_env(located: Located, environ: dict[str, str] | None = None) -> list[ConfigError]:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string, in place. Missing names are errors."""
    env = os.environ if environ is None else environ
    errors: list[ConfigError] = []

    def sub(value: str, path: KeyPath) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                resolved = env[name]
            elif default is not None:
                resolved = default
            else:
                errors.append(
                    located.error(
                        path, f"environment variable {name} is not set; export it or use ${{{name}:-default}}"
                    )
                )
                return ""
            return resolved

        return _ENV.sub(one, value)

    def walk(value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            return sub(value, path) if "${" in value else value
        if isinstance(value, dict):
            for k in list(value):
                value[k] = walk(value[k], (*path, k))
            return value
        if isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = walk(item, (*path, i))
            return value
        return value

    located.data = walk(located.data, ())
    return errors


_SECRET_KEY = re.compile(
    r"(token|password|passwd|secret|api[_-]?key|private[_-]?key|passphrase|authorization|x-auth[\w-]*)$", re.I
)
#: keys of an ``auth:`` block that are not secret; every other string in it is
_AUTH_PUBLIC = {"type", "name", "location", "username", "token_url", "scope", "client_id", "header"}


def collect_secrets(located: Located) -> None:
    """Remember every value stored under a secret-looking key, so output can redact it."""

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if key == "auth" and isinstance(v, str) and str(k) not in _AUTH_PUBLIC and len(v) >= 4:
                    located.secrets.add(v)
                walk(v, str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and _SECRET_KEY.search(key) and len(value) >= 4:
            located.secrets.add(value)

    walk(located.data, "")
