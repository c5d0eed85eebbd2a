"""Paths into an entity: parse once, then read, write and delete with closures.

Writes follow one rule that lets ``Pipeline.apply`` skip a deep copy of every record: the working entity's
top-level dict is owned by the pipeline, but any nested container may still be shared with the caller's input.
So a nested write never mutates a container in place: it copies each container along the path and puts
the copy back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from crossdock.errors import StepConfigError

#: a path segment: a dict key, or a list index (a key that looks like an integer is tried as both)
Segment = str | int


class _Missing:
    """The marker for 'no value here' (distinct from a JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

_SEGMENT_RE = re.compile(
    r"""
    (?P<name>[^.\[\]"']+)                      # bare key: anything but dots and brackets
  | \[\s*(?P<index>-?\d+)\s*\]                 # [0]
  | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]        # ["odd key"]
  | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]        # ['odd key']
  | (?P<dot>\.)
    """,
    re.VERBOSE,
)


def parse_path(text: str, *, where: tuple[str | int, ...] = ()) -> tuple[Segment, ...]:
    """Split ``a.b[0]["odd key"].c`` into segments; digits between dots become list indexes too."""
    if not isinstance(text, str) or not text.strip():
        raise StepConfigError(f"a path must be a non-empty string, got {text!r}", where)
    segments: list[Segment] = []
    pos = 0
    expect_segment = True
    text = text.strip()
    while pos < len(text):
        m = _SEGMENT_RE.match(text, pos)
        if m is None:
            raise StepConfigError(f"invalid path {text!r} at position {pos}", where)
        pos = m.end()
        if m.group("dot"):
            if expect_segment:
                raise StepConfigError(f"invalid path {text!r}: empty segment", where)
            expect_segment = True
            continue
        if m.group("name") is not None:
            if not expect_segment:
                raise StepConfigError(f"invalid path {text!r}: missing '.' before {m.group('name')!r}", where)
            name = m.group("name").strip()
            segments.append(int(name) if _is_int(name) else name)
        elif m.group("index") is not None:
            segments.append(int(m.group("index")))
        else:
            raw = m.group("dq") if m.group("dq") is not None else m.group("sq")
            segments.append(re.sub(r"\\(.)", r"\1", raw))
        expect_segment = False
    if expect_segment:
        raise StepConfigError(f"invalid path {text!r}: it ends with '.'", where)
    return tuple(segments)


def _is_int(text: str) -> bool:
    return text.isdigit() or (text.startswith("-") and text[1:].isdigit())


def format_path(segments: tuple[Segment, ...]) -> str:
    """The readable form used in error messages."""
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]" if out else str(seg)
        elif re.fullmatch(r"[^.\[\]\"' ]+", seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{seg!r}]"
    return out


def step_into(container: Any, seg: Segment) -> Any:
    """One segment of a read; MISSING when there is nothing there."""
    if isinstance(container, Mapping):
        if seg in container:
            return container[seg]
        if isinstance(seg, int):
            return container.get(str(seg), MISSING)
        return MISSING
    if isinstance(container, list) and isinstance(seg, int) and -len(container) <= seg < len(container):
        return container[seg]
    return MISSING


def compile_getter(segments: tuple[Segment, ...]) -> Callable[[Any], Any]:
    """A reader returning MISSING when absent; one- and two-key paths get a direct closure."""
    if len(segments) == 1 and isinstance(segments[0], str):
        key = segments[0]

        def get1(entity: Any) -> Any:
            try:
                return entity[key]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get1
    if len(segments) == 2 and isinstance(segments[0], str) and isinstance(segments[1], str):
        k1, k2 = segments

        def get2(entity: Any) -> Any:
            try:
                inner = entity[k1]
                if isinstance(inner, Mapping):
                    return inner[k2]
            except (KeyError, TypeError, IndexError):
                pass
            return MISSING

        return get2

    def get_n(entity: Any) -> Any:
        cur = entity
        for seg in segments:
            cur = step_into(cur, seg)
            if cur is MISSING:
                return MISSING
        return cur

    return get_n


def _copy_container(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def set_path(entity: dict[str, Any], segments: tuple[Segment, ...], value: Any) -> None:
    """Write ``value``, creating dicts on the way; nested containers are copied, never mutated."""
    if len(segments) == 1 and isinstance(segments[0], str):
        entity[segments[0]] = value
        return
    parent: Any = entity
    for seg in segments[:-1]:
        child = step_into(parent, seg)
        child = _copy_container(child) if isinstance(child, dict | list) else {}
        _put(parent, seg, child)
        parent = child
    _put(parent, segments[-1], value)


def _put(container: Any, seg: Segment, value: Any) -> None:
    if isinstance(container, list):
        if not isinstance(seg, int):
            raise TypeError(f"cannot set key {seg!r} in a list")
        if seg == len(container):
            container.append(value)
        else:
            container[seg] = value
    elif isinstance(container, dict):
        if isinstance(seg, int) and seg not in container:
            container[str(seg)] = value
        else:
            container[seg] = value
    else:
        raise TypeError(f"cannot set {seg!r} in a {type(container).__name__}")


def delete_path(entity: dict[str, Any], segments: tuple[Segment, ...]) -> Any:
    """Remove the value and return it (MISSING when absent); containers on the way are copied."""
    if len(segments) == 1 and isinstance(segments[0], str):
        return entity.pop(segments[0], MISSING)
    parents: list[Any] = [entity]
    cur: Any = entity
    for seg in segments[:-1]:
        cur = step_into(cur, seg)
        if not isinstance(cur, dict | list):
            return MISSING
        parents.append(cur)
    last = segments[-1]
    if step_into(parents[-1], last) is MISSING:
        return MISSING
    # copy the chain below the (owned) top level, then re-link it
    copies = [entity] + [_copy_container(p) for p in parents[1:]]
    for i, seg in enumerate(segments[:-1]):
        _put(copies[i], seg, copies[i + 1])
    target = copies[-1]
    if isinstance(target, list):
        assert isinstance(last, int)
        return target.pop(last)
    if last in target:
        return target.pop(last)
    return target.pop(str(last))


# --- wildcard patterns ---------------------------------------------------------------------------


class PathPattern:
    """A path whose segments may hold ``*`` (any run of characters), each a capture for ``$1``..``$9``."""

    __slots__ = ("_segments", "literal", "source")

    def __init__(self, text: str, *, where: tuple[str | int, ...] = ()) -> None:
        self.source = text
        segments = parse_path(text, where=where)
        self.literal: tuple[Segment, ...] | None = None
        self._segments: list[Segment | re.Pattern[str]] = []
        if not any(isinstance(s, str) and "*" in s for s in segments):
            self.literal = segments
        for seg in segments:
            if isinstance(seg, str) and "*" in seg:
                regex = "".join("(.*?)" if ch == "*" else re.escape(ch) for ch in seg)
                self._segments.append(re.compile(regex + r"\Z", re.DOTALL))
            else:
                self._segments.append(seg)

    @property
    def is_wildcard(self) -> bool:
        return self.literal is None

    def matches(self, entity: Any) -> Iterator[tuple[tuple[Segment, ...], tuple[str, ...]]]:
        """Every concrete path matching the pattern, with its captures (listed first, so writes are safe)."""
        if self.literal is not None:
            if compile_getter(self.literal)(entity) is not MISSING:
                yield self.literal, ()
            return
        yield from list(self._walk(entity, 0, (), ()))

    def _walk(
        self, node: Any, i: int, prefix: tuple[Segment, ...], caps: tuple[str, ...]
    ) -> Iterator[tuple[tuple[Segment, ...], tuple[str, ...]]]:
        if i == len(self._segments):
            yield prefix, caps
            return
        seg = self._segments[i]
        if isinstance(seg, re.Pattern):
            if isinstance(node, Mapping):
                for key in list(node):
                    m = seg.match(str(key))
                    if m is not None:
                        yield from self._walk(node[key], i + 1, (*prefix, key), caps + m.groups())
            return
        child = step_into(node, seg)
        if child is not MISSING:
            yield from self._walk(child, i + 1, (*prefix, seg), caps)


_CAPTURE_RE = re.compile(r"\$(\d)")


def expand_captures(template: str, captures: tuple[str, ...]) -> str:
    """Put ``$1``.. captures into a target path template."""

    def sub(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return captures[n - 1] if 0 < n <= len(captures) else m.group(0)

    return _CAPTURE_RE.sub(sub, template)


class Slot:
    """One compiled path with read, write and delete; a single top-level key skips the general walk."""

    __slots__ = ("get", "key", "segments", "text")

    def __init__(self, text: str, *, where: tuple[str | int, ...] = ()) -> None:
        self.text = text
        self.segments = parse_path(text, where=where)
        self.get = compile_getter(self.segments)
        first = self.segments[0]
        self.key: str | None = first if len(self.segments) == 1 and isinstance(first, str) else None

    def set(self, entity: dict[str, Any], value: Any) -> None:
        if self.key is not None:
            entity[self.key] = value
        else:
            set_path(entity, self.segments, value)

    def delete(self, entity: dict[str, Any]) -> Any:
        return delete_path(entity, self.segments)
