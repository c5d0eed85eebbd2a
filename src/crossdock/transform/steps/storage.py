"""Steps that read and write the engine's named storages: lookup and save."""

from __future__ import annotations

from typing import Any

from crossdock.errors import StepConfigError
from crossdock.transform.expressions import Evaluator, compile_expression, compile_value, to_text
from crossdock.transform.paths import MISSING, Slot, compile_getter
from crossdock.transform.pipeline import (
    CompileContext,
    Entity,
    Step,
    StepFailed,
    StepOptions,
    StorageAccess,
    Where,
    deep_copy,
    register_step,
)


def _need_storages(ctx: CompileContext, where: Where) -> StorageAccess:
    if ctx.storages is None:
        raise StepConfigError("this step needs storage access, and none was given to compile_steps", where)
    return ctx.storages


def _key_text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return to_text(value)


class LookupOptions(StepOptions):
    storage: str
    #: an expression giving the key ("category_id", "=concat(store, ':', sku)")
    key: str
    #: where the found value goes
    into: str
    #: take only this path of the stored value
    field: str | None = None
    #: the value written when nothing is found; without it the record is left as it is
    default: Any = None
    #: reject the record when nothing is found
    required: bool = False


@register_step
class LookupStep(Step):
    """Enrich the record from a storage: ``{storage: categories, key: category_id, into: category}``."""

    kind = "lookup"
    Options = LookupOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.storages = _need_storages(ctx, where)
        self.storage = options.storage
        self.key_expr = compile_expression(options.key, path=(*where, "key"))
        self.into = Slot(options.into, where=(*where, "into"))
        self.field = compile_getter(Slot(options.field, where=(*where, "field")).segments) if options.field else None
        self.has_default = "default" in options.model_fields_set
        self.default = options.default
        self.required = options.required

    def apply(self, entity: Entity) -> Entity:
        key = _key_text(self.key_expr.__call__(entity))
        found: Any = None
        if key is not None:
            found = self.storages.storage_get(self.storage, key)
            if found is not None and self.field is not None:
                found = self.field(found)
                found = None if found is MISSING else found
        if found is None:
            if self.required:
                raise StepFailed(f"no {self.storage} entry for {self.key_expr.source} = {key!r}")
            if not self.has_default:
                return entity
            found = self.default
        self.into.set(entity, deep_copy(found) if isinstance(found, dict | list) else found)
        return entity


class SaveOptions(StepOptions):
    storage: str
    key: str
    #: a literal or '=expression'; the whole record when omitted
    value: Any = None


@register_step
class SaveStep(Step):
    """Remember something for later lookups: ``{storage: seen, key: sku, value: "=price"}``."""

    kind = "save"
    Options = SaveOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.storages = _need_storages(ctx, where)
        self.storage = options.storage
        self.key_expr = compile_expression(options.key, path=(*where, "key"))
        self.value: Evaluator | None = (
            compile_value(options.value, path=(*where, "value")) if "value" in options.model_fields_set else None
        )

    def apply(self, entity: Entity) -> Entity:
        key = _key_text(self.key_expr.__call__(entity))
        if key is None:
            raise StepFailed(f"cannot save to {self.storage}: key {self.key_expr.source} is empty")
        value = deep_copy(entity) if self.value is None else self.value(entity)
        self.storages.storage_put(self.storage, key, value)
        return entity
