"""Steps that shape the record: set, copy, move, rename, remove, map, defaults, merge."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from crossdock.errors import StepConfigError
from crossdock.transform.expressions import Evaluator, compile_expression, compile_template, compile_value
from crossdock.transform.paths import (
    MISSING,
    PathPattern,
    Segment,
    Slot,
    compile_getter,
    delete_path,
    expand_captures,
    parse_path,
    set_path,
)
from crossdock.transform.pipeline import (
    CompileContext,
    Entity,
    Step,
    StepFailed,
    StepOptions,
    Where,
    deep_copy,
    describe,
    register_step,
)

_CAPTURE = re.compile(r"\$[1-9]")


class SetOptions(StepOptions):
    path: str
    #: a literal, or an expression when it is a string starting with '='
    value: Any = None
    #: an expression (no '=' needed)
    expr: str | None = None
    #: a text with {expression} placeholders
    template: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SetOptions:
        given = [k for k in ("value", "expr", "template") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("set needs exactly one of value, expr or template")
        return self


@register_step
class SetStep(Step):
    """Set a value from a literal, an expression (``=price * 2``) or a template (``https://shop/{sku}``)."""

    kind = "set"
    Options = SetOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.value: Evaluator
        if options.template is not None:
            self.value = compile_template(options.template, path=(*where, "template"))
        elif options.expr is not None:
            self.value = compile_expression(options.expr, path=(*where, "expr")).__call__
        else:
            self.value = compile_value(options.value, path=(*where, "value"))
            if isinstance(options.value, dict | list):
                self.value = _fresh(options.value)

    def apply(self, entity: Entity) -> Entity:
        key = self.slot.key
        if key is not None:
            entity[key] = self.value(entity)
        else:
            self.slot.set(entity, self.value(entity))
        return entity


# --- copy / move / rename ------------------------------------------------------------------------


class CopyOptions(StepOptions):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    #: several renames at once: {old: new, ...}
    pairs: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _from_to(self) -> CopyOptions:
        if (self.from_ is None) != (self.to is None):
            raise ValueError("give both 'from' and 'to'")
        if self.from_ is None and not self.pairs:
            raise ValueError("give 'from' and 'to', or a mapping of old: new paths")
        return self


class _Relocate:
    """One from -> to rule; ``*`` in from captures text for ``$1``..``$9`` in to.

    Captures fill in segment by segment, so a captured key holding a dot stays one key.
    """

    def __init__(self, source: str, target: str, where: Where) -> None:
        self.pattern = PathPattern(source, where=(*where, "from"))
        self.target_segments = parse_path(target, where=(*where, "to"))
        uses_captures = any(isinstance(seg, str) and _CAPTURE.search(seg) for seg in self.target_segments)
        self.fixed_target: Slot | None = None
        if not self.pattern.is_wildcard:
            if uses_captures:
                raise StepConfigError(f"{target!r} uses captures but {source!r} has no '*'", (*where, "to"))
            self.fixed_target = Slot(target, where=(*where, "to"))
            self.source_slot = Slot(source, where=(*where, "from"))

    def target_path(self, captures: tuple[str, ...]) -> tuple[Segment, ...]:
        return tuple(expand_captures(seg, captures) if isinstance(seg, str) else seg for seg in self.target_segments)


class _RelocateStep(Step):
    Options = CopyOptions
    keep_source = True

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and not ({"from", "to", "pairs"} & set(raw)):
            return {"pairs": dict(raw)}
        return raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        pairs = [(options.from_, options.to)] if options.from_ is not None else list(options.pairs.items())
        self.rules = [_Relocate(src, dst, where if options.from_ is not None else (*where, src)) for src, dst in pairs]

        #: renames of top-level keys only: the common case, done with dict operations alone
        self.top_level: list[tuple[str, str]] | None = None
        if not self.keep_source and all(
            r.fixed_target is not None and r.fixed_target.key and r.source_slot.key for r in self.rules
        ):
            self.top_level = [(str(r.source_slot.key), str(r.fixed_target.key)) for r in self.rules if r.fixed_target]

    def apply(self, entity: Entity) -> Entity:
        if self.top_level is not None:
            for old, new in self.top_level:
                if old in entity:
                    entity[new] = entity.pop(old)
            return entity
        for rule in self.rules:
            if rule.fixed_target is not None:
                value = rule.source_slot.get(entity)
                if value is MISSING:
                    continue
                if not self.keep_source:
                    rule.source_slot.delete(entity)
                elif isinstance(value, dict | list):
                    value = deep_copy(value)
                rule.fixed_target.set(entity, value)
                continue
            found = list(rule.pattern.matches(entity))
            moves: list[tuple[tuple[Segment, ...], Any]] = []
            for path, caps in found:
                value = compile_getter(path)(entity)
                if self.keep_source:
                    value = deep_copy(value) if isinstance(value, dict | list) else value
                moves.append((rule.target_path(caps), value))
                if not self.keep_source:
                    delete_path(entity, path)
            for target, value in moves:
                set_path(entity, target, value)
        return entity


@register_step
class CopyStep(_RelocateStep):
    """Copy a value to another path; ``{from: "attr_*", to: "attributes.$1"}`` copies every match."""

    kind = "copy"


@register_step
class MoveStep(_RelocateStep):
    """Move a value to another path (the source is removed); wildcards as in copy."""

    kind = "move"
    keep_source = False


@register_step
class RenameStep(_RelocateStep):
    """Rename keys: ``{from: title, to: name}`` or ``{title: name, descr: description}``; same as move."""

    kind = "rename"
    keep_source = False


# --- remove --------------------------------------------------------------------------------------


class RemoveOptions(StepOptions):
    paths: list[str]


@register_step
class RemoveStep(Step):
    """Remove keys: a path, or a list of paths and patterns (``tmp_*``, ``attributes.*_internal``)."""

    kind = "remove"
    Options = RemoveOptions

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"paths": [raw]}
        if isinstance(raw, list):
            return {"paths": raw}
        return raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.top_keys: list[str] = []
        self.slots: list[Slot] = []
        self.patterns: list[PathPattern] = []
        for i, text in enumerate(options.paths):
            pattern = PathPattern(text, where=(*where, "paths", i))
            if pattern.is_wildcard:
                self.patterns.append(pattern)
                continue
            slot = Slot(text, where=(*where, "paths", i))
            if slot.key is not None:
                self.top_keys.append(slot.key)
            else:
                self.slots.append(slot)

    def apply(self, entity: Entity) -> Entity:
        for key in self.top_keys:
            entity.pop(key, None)
        for slot in self.slots:
            slot.delete(entity)
        for pattern in self.patterns:
            # deepest first, so removing 'a.*' and 'a.*.b' never trips over itself
            for path, _ in sorted(pattern.matches(entity), key=lambda m: -len(m[0])):
                delete_path(entity, path)
        return entity


# --- map -----------------------------------------------------------------------------------------


class MapOptions(StepOptions):
    path: str
    values: dict[Any, Any]
    #: used when the value is not in ``values``; without it the value is kept as it is
    default: Any = None
    #: write the result here instead of over ``path``
    into: str | None = None


@register_step
class MapStep(Step):
    """Map values through a dictionary (``{A: apparel}``), with an optional default for unknown values."""

    kind = "map"
    Options = MapOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = Slot(options.into, where=(*where, "into")) if options.into else self.slot
        self.values: dict[Any, Any] = dict(options.values)
        # YAML reads `1: x` as an int key; records often carry "1": accept both spellings
        for key, value in options.values.items():
            if not isinstance(key, str):
                self.values.setdefault(str(key).lower() if isinstance(key, bool) else str(key), value)
        self.has_default = "default" in options.model_fields_set
        self.default = options.default

    def apply(self, entity: Entity) -> Entity:
        value = self.slot.get(entity)
        if value is MISSING:
            return entity
        try:
            result = self.values[value]
        except (KeyError, TypeError):
            if self.has_default:
                result = self.default
            else:
                return entity if self.into is self.slot else self._keep(entity, value)
        self.into.set(entity, deep_copy(result) if isinstance(result, dict | list) else result)
        return entity

    def _keep(self, entity: Entity, value: Any) -> Entity:
        self.into.set(entity, value)
        return entity


# --- defaults and merge --------------------------------------------------------------------------


class DefaultsOptions(StepOptions):
    values: dict[str, Any]


@register_step
class DefaultsStep(Step):
    """Fill paths that are missing or null: ``{currency: EUR, "stock.unit": "=default_unit"}``."""

    kind = "defaults"
    Options = DefaultsOptions

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and not (set(raw) == {"values"} and isinstance(raw["values"], Mapping)):
            return {"values": dict(raw)}
        return raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.fills: list[tuple[Slot, Evaluator]] = []
        for key, value in options.values.items():
            here = (*where, key)
            fn = _fresh(value) if isinstance(value, dict | list) else compile_value(value, path=here)
            self.fills.append((Slot(key, where=here), fn))

    def apply(self, entity: Entity) -> Entity:
        for slot, fn in self.fills:
            current = slot.get(entity)
            if current is MISSING or current is None:
                slot.set(entity, fn(entity))
        return entity


def _fresh(literal: Any) -> Evaluator:
    """A literal container, copied per record so records never share it."""
    return lambda _e: deep_copy(literal)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: nested dicts merge key by key, anything else in ``extra`` wins. Neither input changes."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = deep_copy(value) if isinstance(value, dict | list) else value
    return out


class MergeOptions(StepOptions):
    #: where to merge; the whole record when omitted
    path: str | None = None
    #: a mapping, or an expression giving one ("=attributes_extra")
    value: Any


@register_step
class MergeStep(Step):
    """Deep-merge a mapping into the record or into one of its objects."""

    kind = "merge"
    Options = MergeOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path")) if options.path else None
        self.path_text = options.path or "the record"
        if isinstance(options.value, str):
            self.value = compile_value(options.value, path=(*where, "value"))
            if not options.value.startswith("="):
                raise StepConfigError("merge value must be a mapping or an '=expression'", (*where, "value"))
        elif isinstance(options.value, Mapping):
            literal = dict(options.value)
            self.value = lambda _e: literal
        else:
            raise StepConfigError("merge value must be a mapping or an '=expression'", (*where, "value"))

    def apply(self, entity: Entity) -> Entity:
        extra = self.value(entity)
        if extra is None:
            return entity
        if not isinstance(extra, Mapping):
            raise StepFailed(f"cannot merge {describe(extra)} into {self.path_text}: not an object")
        if self.slot is None:
            return deep_merge(entity, extra)
        current = self.slot.get(entity)
        if current is MISSING or current is None:
            current = {}
        if not isinstance(current, Mapping):
            raise StepFailed(f"cannot merge into {self.path_text} {describe(current)}: not an object")
        self.slot.set(entity, deep_merge(current, extra))
        return entity
