"""String operations and arithmetic."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import model_validator

from crossdock.errors import StepConfigError
from crossdock.transform.expressions import Evaluator, compile_expression, compile_value, to_text
from crossdock.transform.paths import MISSING, Slot
from crossdock.transform.pipeline import (
    CompileContext,
    Entity,
    Step,
    StepFailed,
    StepOptions,
    Where,
    describe,
    register_step,
)

StringOp = Literal["trim", "lower", "upper", "title", "replace", "regex_extract", "split", "join", "concat", "truncate"]
_NEEDS: dict[str, tuple[str, ...]] = {
    "replace": ("old",),
    "regex_extract": ("pattern",),
    "concat": ("values",),
    "truncate": ("length",),
}
_ALLOWED: dict[str, frozenset[str]] = {
    "trim": frozenset({"chars"}),
    "replace": frozenset({"old", "new", "regex", "count"}),
    "regex_extract": frozenset({"pattern", "group", "default"}),
    "split": frozenset({"sep", "maxsplit"}),
    "join": frozenset({"sep"}),
    "concat": frozenset({"values", "sep"}),
    "truncate": frozenset({"length"}),
}


class StringOptions(StepOptions):
    path: str
    op: StringOp
    #: write the result here instead of over ``path``
    into: str | None = None
    chars: str | None = None
    old: str | None = None
    new: str = ""
    regex: bool = False
    count: int = 0
    pattern: str | None = None
    group: int | str | None = None
    default: Any = None
    sep: str | None = None
    maxsplit: int = -1
    values: list[Any] | None = None
    length: int | None = None

    @model_validator(mode="after")
    def _op_options(self) -> StringOptions:
        for key in _NEEDS.get(self.op, ()):
            if getattr(self, key) is None:
                raise ValueError(f"op {self.op} needs {key!r}")
        extra = self.model_fields_set - {"path", "op", "into"} - _ALLOWED.get(self.op, frozenset())
        if extra:
            raise ValueError(f"op {self.op} does not take {', '.join(sorted(extra))}")
        return self


@register_step
class StringStep(Step):
    """Trim, change case, replace, extract with a regex, split, join, concatenate or truncate text."""

    kind = "string"
    Options = StringOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = Slot(options.into, where=(*where, "into")) if options.into else self.slot
        self.op = options.op
        self.concat_parts: list[Evaluator] = []
        self.fn: Callable[[Any], Any]
        op = options.op
        if op == "concat":
            self.concat_parts = [
                compile_value(v, path=(*where, "values", i)) for i, v in enumerate(options.values or [])
            ]
            self.sep = options.sep or ""
            return
        if op == "trim":
            chars = options.chars
            self.fn = self._text(lambda s: s.strip(chars))
        elif op in ("lower", "upper", "title"):
            self.fn = self._text(getattr(str, op))
        elif op == "truncate":
            length = options.length
            self.fn = self._text(lambda s: s[:length])
        elif op == "replace":
            self.fn = self._replace(options, where)
        elif op == "regex_extract":
            self.fn = self._extract(options, where)
        elif op == "split":
            sep, maxsplit = options.sep or None, options.maxsplit
            self.fn = self._text(lambda s: s.split(sep, maxsplit) if s else [])
        elif op == "join":
            sep = options.sep if options.sep is not None else ","
            self.fn = self._join(sep)

    def _text(self, fn: Callable[[str], Any]) -> Callable[[Any], Any]:
        def apply(value: Any) -> Any:
            if not isinstance(value, str):
                raise StepFailed(f"cannot {self.op} {self.slot.text} {describe(value)}: not a string")
            return fn(value)

        return apply

    def _replace(self, options: Any, where: Where) -> Callable[[Any], Any]:
        old, new, count = options.old, options.new, options.count
        if options.regex:
            try:
                regex = re.compile(old)
            except re.error as exc:
                raise StepConfigError(f"bad regular expression {old!r}: {exc}", (*where, "old")) from None
            try:
                regex.sub(new, "")
            except (re.error, IndexError) as exc:
                raise StepConfigError(f"bad replacement {new!r}: {exc}", (*where, "new")) from None
            return self._text(lambda s: regex.sub(new, s, count=count))
        return self._text(lambda s: s.replace(old, new, count or -1))

    def _extract(self, options: Any, where: Where) -> Callable[[Any], Any]:
        try:
            regex = re.compile(options.pattern)
        except re.error as exc:
            raise StepConfigError(f"bad regular expression {options.pattern!r}: {exc}", (*where, "pattern")) from None
        group = options.group if options.group is not None else (1 if regex.groups else 0)
        if isinstance(group, int) and group > regex.groups:
            raise StepConfigError(f"the pattern has no group {group}", (*where, "group"))
        if isinstance(group, str) and group not in regex.groupindex:
            raise StepConfigError(f"the pattern has no group named {group!r}", (*where, "group"))
        default = options.default

        def extract(s: str) -> Any:
            m = regex.search(s)
            return default if m is None or m.group(group) is None else m.group(group)

        return self._text(extract)

    def _join(self, sep: str) -> Callable[[Any], Any]:
        def join(value: Any) -> Any:
            if not isinstance(value, list):
                raise StepFailed(f"cannot join {self.slot.text} {describe(value)}: not a list")
            return sep.join(to_text(v) for v in value)

        return join

    def apply(self, entity: Entity) -> Entity:
        if self.concat_parts:
            self.into.set(entity, self.sep.join(to_text(p(entity)) for p in self.concat_parts))
            return entity
        value = self.slot.get(entity)
        if value is MISSING:
            return entity
        self.into.set(entity, None if value is None else self.fn(value))
        return entity


class MathOptions(StepOptions):
    path: str
    expr: str
    #: digits to round the result to
    round: int | None = None
    #: what a null result (a missing operand) does: reject the record, or write null
    on_null: Literal["reject", "null", "skip"] = "reject"


@register_step
class MathStep(Step):
    """Compute a number: ``{path: total, expr: "price * qty"}``; a non-number result rejects the record."""

    kind = "math"
    Options = MathOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.expr = compile_expression(options.expr, path=(*where, "expr"))
        self.fn = self.expr.__call__
        self.digits = options.round
        self.on_null = options.on_null

    def apply(self, entity: Entity) -> Entity:
        result = self.fn(entity)
        if type(result) is not int and type(result) is not float:
            if result is None:
                if self.on_null == "skip":
                    return entity
                if self.on_null == "reject":
                    raise StepFailed(f"{self.slot.text} = {self.expr.source} is null (a value is missing)")
            else:
                raise StepFailed(f"{self.slot.text} = {self.expr.source} gave {describe(result)}, not a number")
        elif self.digits is not None:
            result = round(result, self.digits)
        self.slot.set(entity, result)
        return entity
