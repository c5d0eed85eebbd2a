"""Read YAML while remembering where every key came from, so errors can name file and line."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crossdock.errors import ConfigError
from crossdock.redact import MIN_SECRET

KeyPath = tuple[str | int, ...]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENV = re.compile(rf"\$\{{({_NAME})(?::-([^}}]*))?\}}")
#: ``${file:PATH}``, where PATH may hold ``${NAME}`` references of its own (one level)
_FILE_REF = re.compile(r"\$\{file:(?P<file>(?:\$\{[^{}]*\}|[^{}])*)\}")
#: ``${NAME}``, ``${NAME:-default}`` or ``${file:PATH}``
_REF = re.compile(rf"{_FILE_REF.pattern}|\$\{{(?P<name>{_NAME})(?::-(?P<default>[^}}]*))?\}}")
#: a secret file larger than this is refused: a token, a password or a private key is a few KiB at most, and a
#: bigger file is a wrong path (a log, an archive) whose text should not end up in a header
MAX_SECRET_FILE = 64 * 1024


@dataclass
class Located:
    """Parsed YAML data plus a (file, line) for every key path in it."""

    data: Any
    lines: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)
    #: values redacted wherever text leaves the process: what secret-looking keys hold, what secret-looking
    #: environment variables gave, and every value read from a ``${file:...}``
    secrets: set[str] = field(default_factory=set)
    #: the text of every unquoted value that YAML read as something else (``off`` → False, ``2024`` → 2024), by
    #: key path, so an error about a name that YAML did not read as text can show how it was written
    written: dict[KeyPath, str] = field(default_factory=dict)

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
        _record_lines(node, (), display, located.lines, located.written)
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


_TEXT_TAG = "tag:yaml.org,2002:str"


def _record_lines(
    node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, tuple[str, int]], written: dict[KeyPath, str]
) -> None:
    out.setdefault(path, (file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            out[child] = (file, key_node.start_mark.line + 1)
            _record_lines(value_node, child, file, out, written)
            out[child] = (file, key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), file, out, written)
    elif isinstance(node, yaml.ScalarNode) and node.style is None and node.tag != _TEXT_TAG:
        written[path] = str(node.value)


def interpolate_env(
    located: Located, environ: Mapping[str, str] | None = None, *, root: Path | None = None
) -> list[ConfigError]:
    """Replace ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in every string, in place.

    A missing variable or an unusable file is an error naming the key. A file's text is always a secret, and so
    is the value of a variable whose name looks secret (``SHOP_TOKEN``): both are added to ``located.secrets``.
    A relative PATH starts at ``root`` (the project folder; the current folder when None). Replacements are not
    scanned again, so a value holding ``${...}`` stays as it is.
    """
    env = os.environ if environ is None else environ
    base = (Path.cwd() if root is None else root).absolute()
    errors: list[ConfigError] = []

    def variable(name: str, default: str | None, path: KeyPath) -> str | None:
        if name in env:
            resolved = env[name]
        elif default is not None:
            resolved = default
        else:
            errors.append(
                located.error(path, f"environment variable {name} is not set; export it or use ${{{name}:-default}}")
            )
            return None
        if _SECRET_KEY.search(name) and len(resolved) >= MIN_SECRET:
            located.secrets.add(resolved)
        return resolved

    def secret_file(written: str, path: KeyPath) -> str:
        ref = f"${{file:{written}}}"
        if ":-" in _ENV.sub("", written):
            errors.append(
                located.error(
                    path,
                    f"{ref}: a secret file takes no :-default (a secret that is not there must stop the load, not "
                    "be replaced); to choose the file per machine, put a variable in the path: "
                    "${file:${SECRETS_DIR:-/run/secrets}/shop_token}",
                )
            )
            return ""
        missing = False

        def nested(match: re.Match[str]) -> str:
            nonlocal missing
            found = variable(match.group(1), match.group(2), path)
            missing = missing or found is None
            return found or ""

        name = _ENV.sub(nested, written).strip()
        if missing:
            return ""
        if not name or "${" in name:
            errors.append(
                located.error(path, f"{ref}: write the path of the file that holds the secret: ${{file:PATH}}")
            )
            return ""
        try:
            text = read_secret_file(base / name)
        except _Unusable as exc:
            errors.append(located.error(path, f"{ref}: {exc}"))
            return ""
        if len(text) >= MIN_SECRET:
            located.secrets.add(text)
        return text

    def sub(value: str, path: KeyPath) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group("file") is not None:
                return secret_file(match.group("file"), path)
            return variable(match.group("name"), match.group("default"), path) or ""

        if "${file:" in _FILE_REF.sub("", value):
            errors.append(located.error(path, "a ${file:...} reference is not closed; write ${file:PATH}"))
        return _REF.sub(one, value)

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


class _Unusable(Exception):
    """A ``${file:...}`` that names no readable secret; the message says what is wrong and what to do."""


def read_secret_file(path: Path) -> str:
    """The text of a secret file, less one trailing line break (``echo`` and Docker leave one), nothing else.

    Refused with :class:`_Unusable`: a missing, unreadable, empty or non-UTF-8 file, a directory, anything that is
    not a regular file (a FIFO would block the load), and a file over :data:`MAX_SECRET_FILE`.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _Unusable(f"no file {path}; create it or mount the secret there, or correct the path") from None
    except PermissionError:
        raise _Unusable(
            f"cannot reach {path}: a folder above it is closed to this user (permission denied); "
            "let the user running crossdock into it"
        ) from None
    except OSError as exc:
        raise _Unusable(f"cannot read {path} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise _Unusable(f"{path} is a directory; name the file inside it that holds the secret")
    if not stat.S_ISREG(info.st_mode):
        raise _Unusable(f"{path} is not a regular file; point at the file that holds the secret")
    if info.st_size > MAX_SECRET_FILE:
        raise _Unusable(_too_large(path, f"{info.st_size} bytes"))
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_FILE + 1)
    except PermissionError:
        raise _Unusable(
            f"cannot read {path} (permission denied); let the user running crossdock read it "
            "(its owner and mode, or uid/mode of the secret in the compose or pod spec)"
        ) from None
    except OSError as exc:
        raise _Unusable(f"cannot read {path} ({exc.strerror or exc})") from None
    if len(raw) > MAX_SECRET_FILE:  # it grew since, or the size was not known (/proc)
        raise _Unusable(_too_large(path, f"more than {MAX_SECRET_FILE} bytes"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unusable(f"{path} is not UTF-8 text; a secret file holds the secret as text") from None
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text:
        raise _Unusable(f"{path} is empty; write the secret into it")
    return text


def _too_large(path: Path, size: str) -> str:
    return (
        f"{path} holds {size}, over the {MAX_SECRET_FILE // 1024} KiB a secret file may hold; "
        "point at the file that holds only the secret"
    )


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
