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


#: Most nodes that alias uses (``*name``, ``<<: *name``) may add to one file, counting each use as the full size
#: of what it names. A config with a few hundred merge keys stays far below; a "billion laughs" file (aliases of
#: aliases, 10**10 strings from 500 bytes) passes it after a few levels and is refused before anything is expanded.
MAX_ALIAS_NODES = 100_000
#: Deepest nesting of lists and mappings; real configs stay under 20, and Python's stack needs a bound.
MAX_YAML_DEPTH = 100


class _Refused(Exception):
    """A YAML file that parses but that crossdock will not expand; carries the 1-based line to report."""

    def __init__(self, detail: str, mark: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.line: int | None = mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts what aliases expand to while composing, so bombs and loops never get built.

    PyYAML shares aliased nodes, but everything that walks the data afterwards (line recording, ``${ENV}``,
    secret collection, merge keys) visits each use again: the cost is the expanded size, so that is what is
    bounded. An alias to a node that is still open (``a: &x [*x]``) would make a loop; it is refused as well.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: expanded size of every completed anchored node, by anchor name
        self._sizes: dict[str, int] = {}
        #: anchors whose node is being composed right now
        self._open: set[str] = set()
        #: nodes added by alias uses so far
        self._expanded = 0
        #: expanded size of the children of every node being composed; [0] is the document
        self._counts: list[int] = [0]

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            anchor = str(event.anchor)
            if anchor in self._open:
                raise _Refused(
                    f"alias *{anchor} is used inside the value it names, which would make an endless loop; "
                    "write the value out instead",
                    event.start_mark,
                )
            node = super().compose_node(parent, index)  # raises for an undefined alias
            size = self._sizes.get(anchor, 1)
            self._expanded += size
            if self._expanded > MAX_ALIAS_NODES:
                raise _Refused(
                    f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes; "
                    "write the values out or use fewer anchors",
                    event.start_mark,
                )
            self._counts[-1] += size
            return node
        if len(self._counts) > MAX_YAML_DEPTH:
            raise _Refused(f"YAML nests deeper than {MAX_YAML_DEPTH} levels; flatten the structure", event.start_mark)
        anchor_name = getattr(event, "anchor", None)
        if anchor_name is not None:
            self._open.add(anchor_name)
        self._counts.append(0)
        node = super().compose_node(parent, index)
        size = 1 + self._counts.pop()
        if anchor_name is not None:
            self._open.discard(anchor_name)
            self._sizes[anchor_name] = size
        self._counts[-1] += size
        return node


def load_yaml(path: Path) -> Located:
    """Parse one YAML file. Syntax errors and refused aliases become a ConfigError naming the line.

    The file is composed once, with the bounded loader, and the data is built from that same node tree, so the
    alias check and the data can never disagree.
    """
    text = _read(path)
    display = str(path)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        raise ConfigError(exc.detail, file=display, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem}", file=display, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=display) from None
    except RecursionError:
        # a safety net only: the nesting bound in _BoundedLoader stops this well before Python's stack runs out
        raise ConfigError(f"YAML nests too deeply; keep it under {MAX_YAML_DEPTH} levels", file=display) from None
    finally:
        loader.dispose()
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
