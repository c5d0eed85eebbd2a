"""Steps that steer the record: if, filter, reject, for_each, split, use, python."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import Field

from crossdock.errors import RecordFiltered, RecordRejected, StepConfigError
from crossdock.transform.expressions import EvaluationError, compile_condition, compile_template
from crossdock.transform.paths import MISSING, Slot
from crossdock.transform.pipeline import (
    CompileContext,
    Entity,
    Pipeline,
    Step,
    StepFailed,
    StepOptions,
    Where,
    deep_copy,
    describe,
    register_step,
)

ENTRY_POINT_GROUP = "crossdock.transformers"


def _condition_text(spec: Any) -> str:
    return spec if isinstance(spec, str) else repr(spec)


class IfOptions(StepOptions):
    condition: Any
    then: list[Any] = Field(default_factory=list)
    else_: list[Any] = Field(default_factory=list, alias="else")


@register_step
class IfStep(Step):
    """Run ``then`` steps when the condition holds, else the ``else`` steps."""

    kind = "if"
    Options = IfOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.condition = compile_condition(options.condition, path=(*where, "condition"))
        self.then = ctx.nested(options.then, (*where, "then"), f"{self.number}.then.")
        self.otherwise = ctx.nested(options.else_, (*where, "else"), f"{self.number}.else.")
        self.fans_out = self.then.fans_out or self.otherwise.fans_out

    def apply(self, entity: Entity) -> Entity:
        branch = self.then if self.condition(entity) else self.otherwise
        return branch.apply_owned(entity)[0] if branch else entity

    def expand(self, entity: Entity) -> list[Entity]:
        branch = self.then if self.condition(entity) else self.otherwise
        return branch.apply_owned(entity) if branch else [entity]


class FilterOptions(StepOptions):
    condition: Any
    #: the skip reason (a template); default "filter: <condition>"
    reason: str | None = None


@register_step
class FilterStep(Step):
    """Keep the record only when the condition is true; otherwise it is skipped, with the condition as reason.

    A condition that cannot be evaluated on a record counts as false: a filter never fails a record.
    """

    kind = "filter"
    Options = FilterOptions

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and "condition" in raw:
            return raw
        return {"condition": raw}

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.condition = compile_condition(options.condition, path=(*where, "condition"))
        text = f"filter: {_condition_text(options.condition)}"
        self.reason = compile_template(options.reason, path=(*where, "reason")) if options.reason else (lambda _e: text)

    def apply(self, entity: Entity) -> Entity:
        try:
            if self.condition(entity):
                return entity
        except (EvaluationError, ValueError, TypeError) as exc:
            raise RecordFiltered(f"{self.reason(entity)} (not evaluated: {exc})") from None
        try:
            reason = self.reason(entity)
        except (EvaluationError, ValueError, TypeError):
            reason = "filter"
        raise RecordFiltered(reason)


class RejectOptions(StepOptions):
    if_: Any = Field(default=True, alias="if")
    #: the reason (a template): "no price for {sku}"
    message: str = "rejected by a reject step"


@register_step
class RejectStep(Step):
    """Reject the record with a message when the condition holds (always, without ``if``)."""

    kind = "reject"
    Options = RejectOptions

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        return {"message": raw} if isinstance(raw, str) else raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.condition = compile_condition(options.if_, path=(*where, "if"))
        self.message = compile_template(options.message, path=(*where, "message"))

    def apply(self, entity: Entity) -> Entity:
        if self.condition(entity):
            raise RecordRejected(self.message(entity))
        return entity


class ForEachOptions(StepOptions):
    path: str
    steps: list[Any]


@register_step
class ForEachStep(Step):
    """Apply nested steps to every item of a list. Filtered items drop out; a split item becomes several.

    An item that is not an object is seen by the nested steps as ``{value: item}``.
    """

    kind = "for_each"
    Options = ForEachOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.pipeline = ctx.nested(options.steps, (*where, "steps"), "")

    def apply(self, entity: Entity) -> Entity:
        items = self.slot.get(entity)
        if items is MISSING or items is None:
            return entity
        if not isinstance(items, list):
            raise StepFailed(f"cannot loop over {self.slot.text} {describe(items)}: not a list")
        out: list[Any] = []
        run = self.pipeline.apply_owned
        for i, item in enumerate(items):
            wrapped = not isinstance(item, dict)
            work = {"value": item} if wrapped else dict(item)
            try:
                results = run(work)
            except RecordFiltered:
                continue
            except RecordRejected as exc:
                raise RecordRejected(f"{self.label}: {self.slot.text}[{i}]: {exc.message}") from None
            out.extend(r.get("value") for r in results) if wrapped else out.extend(results)
        self.slot.set(entity, out)
        return entity


class SplitOptions(StepOptions):
    path: str
    #: put each item under this key; without it the item itself becomes the record
    into: str | None = None
    #: parent fields copied into every child: [order_id] or {order: order_id}
    keep: list[str] | dict[str, str] = Field(default_factory=list)
    #: write the item's position (0-based) under this key
    index: str | None = None
    #: what an empty (or missing) list does: skip the record, reject it, or keep the parent as it is
    on_empty: Literal["filter", "reject", "keep"] = "filter"


@register_step
class SplitStep(Step):
    """One record becomes many, one per item of a list (order lines from an order), with parent fields."""

    kind = "split"
    Options = SplitOptions
    fans_out = True

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = options.into
        if self.into is not None:
            Slot(self.into, where=(*where, "into"))
        pairs = options.keep.items() if isinstance(options.keep, dict) else ((k, k) for k in options.keep)
        self.keep = [
            (Slot(target, where=(*where, "keep", target)), Slot(source, where=(*where, "keep", source)).get)
            for target, source in pairs
        ]
        self.index = options.index
        self.on_empty = options.on_empty
        self.into_slot = Slot(self.into, where=(*where, "into")) if self.into else None

    def apply(self, entity: Entity) -> Entity:
        raise AssertionError("split fans out; the pipeline calls expand")  # pragma: no cover

    def expand(self, entity: Entity) -> list[Entity]:
        items = self.slot.get(entity)
        if items is MISSING or items is None:
            items = []
        if not isinstance(items, list):
            raise StepFailed(f"cannot split {self.slot.text} {describe(items)}: not a list")
        if not items:
            if self.on_empty == "keep":
                return [entity]
            if self.on_empty == "reject":
                raise StepFailed(f"{self.slot.text} is empty")
            raise RecordFiltered(f"{self.label}: {self.slot.text} is empty")
        children: list[Entity] = []
        for i, item in enumerate(items):
            child: Entity
            if self.into_slot is not None:
                child = {}
                self.into_slot.set(child, item)
            elif isinstance(item, dict):
                child = dict(item)
            else:
                child = {"value": item}
            for target, get in self.keep:
                value = get(entity)
                if value is not MISSING:
                    target.set(child, value)
            if self.index:
                child[self.index] = i
            children.append(child)
        return children


class UseOptions(StepOptions):
    name: str


@register_step
class UseStep(Step):
    """Run a named transformer, defined once under ``transformers:`` and shared by routes."""

    kind = "use"
    Options = UseOptions

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        return {"name": raw} if isinstance(raw, str) else raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.pipeline: Pipeline = ctx.named_pipeline(options.name, (*where, "name"))
        self.fans_out = self.pipeline.fans_out

    def apply(self, entity: Entity) -> Entity:
        return self.pipeline.apply_owned(entity)[0] if self.pipeline else entity

    def expand(self, entity: Entity) -> list[Entity]:
        return self.pipeline.apply_owned(entity)


class PythonOptions(StepOptions):
    #: "package.module:function", "package.module.function", or an entry point name in crossdock.transformers
    function: str
    #: passed as the second argument when given
    options: dict[str, Any] | None = None


def resolve_function(spec: str, where: Where) -> Callable[..., Any]:
    """Import a function by dotted path or find it among the ``crossdock.transformers`` entry points."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif "." in spec:
        module_name, _, attr = spec.rpartition(".")
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
        if not found:
            raise StepConfigError(f"no entry point {spec!r} in group {ENTRY_POINT_GROUP}", where)
        fn = next(iter(found)).load()
        if not callable(fn):
            raise StepConfigError(f"entry point {spec!r} is not callable", where)
        return fn  # type: ignore[no-any-return]
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepConfigError(f"cannot import {module_name!r}: {exc}", where) from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise StepConfigError(f"{module_name!r} has no {attr!r}", where)
    if not callable(target):
        raise StepConfigError(f"{spec!r} is not callable", where)
    return target  # type: ignore[no-any-return]


@register_step
class PythonStep(Step):
    """Call ``fn(entity)`` (or ``fn(entity, options)``); it returns the new entity, a list of them, or None.

    The function gets its own deep copy, so it may mutate freely.
    """

    kind = "python"
    Options = PythonOptions
    fans_out = True

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        return {"function": raw} if isinstance(raw, str) else raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.fn = resolve_function(options.function, (*where, "function"))
        self.options = options.options
        self.name = options.function

    def apply(self, entity: Entity) -> Entity:
        raise AssertionError("python fans out; the pipeline calls expand")  # pragma: no cover

    def expand(self, entity: Entity) -> list[Entity]:
        work = deep_copy(entity)
        result = self.fn(work) if self.options is None else self.fn(work, self.options)
        if result is None:
            return [work]
        if isinstance(result, dict):
            return [result]
        if isinstance(result, list) and all(isinstance(r, dict) for r in result):
            return result
        raise StepFailed(f"{self.name} returned {describe(result)}; expected an object, a list of them, or None")
