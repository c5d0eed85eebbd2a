"""Steps, their registry, and the Pipeline that runs a compiled step list over one entity."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from crossdock.errors import RecordFiltered, RecordRejected, StepConfigError
from crossdock.transform.expressions import EvaluationError

Where = tuple[str | int, ...]
Entity = dict[str, Any]


@runtime_checkable
class StorageAccess(Protocol):
    """What ``lookup`` and ``save`` need from the engine's storages."""

    def storage_get(self, storage: str, key: str) -> Any | None: ...

    def storage_put(self, storage: str, key: str, value: Any) -> None: ...


class StepFailed(Exception):
    """Raised inside a step with the bare reason; the pipeline prefixes the step number and kind."""


def describe(value: Any) -> str:
    """``('abc', str)``: the value and its type, as error messages show them."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"({text}, {type(value).__name__})"


class StepOptions(BaseModel):
    """Base for every step's options: unknown keys are errors, so typos surface at compile time."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class CompileContext:
    """What a step may need while compiling: named transformers, storages, and where it sits in the config."""

    def __init__(
        self,
        named: Mapping[str, list[Any]] | None,
        storages: StorageAccess | None,
        *,
        label: str = "",
        using: tuple[str, ...] = (),
        cache: dict[str, Pipeline] | None = None,
    ) -> None:
        self.named = named or {}
        self.storages = storages
        self.label = label
        self.using = using
        self.cache: dict[str, Pipeline] = {} if cache is None else cache

    def nested(self, steps: Any, where: Where, label: str) -> Pipeline:
        """Compile a nested step list (``then``, ``steps``...): config paths stay absolute, labels nest."""
        sub = CompileContext(self.named, self.storages, label=label, using=self.using, cache=self.cache)
        return _compile(steps, sub, where)

    def named_pipeline(self, name: str, where: Where) -> Pipeline:
        if name in self.using:
            chain = " -> ".join((*self.using, name))
            raise StepConfigError(f"transformer {name!r} uses itself ({chain})", where)
        if name not in self.named:
            known = ", ".join(sorted(self.named)) or "none defined"
            raise StepConfigError(f"unknown transformer {name!r} (known: {known})", where)
        if name not in self.cache:
            sub = CompileContext(
                self.named, self.storages, label=f"{name} > ", using=(*self.using, name), cache=self.cache
            )
            try:
                self.cache[name] = _compile(self.named[name], sub, ())
            except StepConfigError as exc:
                raise StepConfigError(f"in transformer {name!r}: {exc.message}", where) from exc
        return self.cache[name]


class Step:
    """A transformer step. Subclasses set ``kind`` and ``Options`` and implement ``apply`` (or ``expand``)."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type[StepOptions]] = StepOptions
    #: True when the step may turn one entity into several (or none): the pipeline then calls ``expand``
    fans_out: bool = False

    def __init__(self, options: Any, ctx: CompileContext, where: Where, number: str = "1") -> None:
        self.where = where
        #: "3" or "3.then.1": where the step sits, for nested labels
        self.number = number
        self.label = f"step {number} ({self.kind})"
        self.compile(options, ctx, where)

    @classmethod
    def normalize(cls, raw: Any) -> Any:
        """Turn a shorthand (a string, a list) into the options mapping; the default takes a mapping as is."""
        return raw

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        """Prepare everything that does not depend on the record."""

    def apply(self, entity: Entity) -> Entity:
        """Transform one entity (its top-level dict is owned by the pipeline; nested ones are not)."""
        raise NotImplementedError

    def expand(self, entity: Entity) -> list[Entity]:
        return [self.apply(entity)]


#: the registry: step kind -> class. Third-party steps are added with ``register_step``.
STEPS: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make a step available under its ``kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    STEPS[cls.kind] = cls
    return cls


def parse_options(step_cls: type[Step], raw: Any, where: Where) -> Any:
    """Validate a step's options with its pydantic model; errors carry the key path."""
    try:
        return step_cls.Options.model_validate(step_cls.normalize(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if len(exc.errors()) > 1:
            msg += f" (and {len(exc.errors()) - 1} more)"
        raise StepConfigError(f"{step_cls.kind}: {msg}", (*where, *loc)) from None


def _make_step(raw: Any, index: int, ctx: CompileContext, where: Where) -> Step:
    here = (*where, index)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise StepConfigError(f"a step is a one-key mapping like {{set: {{...}}}}, got {raw!r}", here)
    ((kind, options),) = raw.items()
    step_cls = STEPS.get(kind)
    if step_cls is None:
        raise StepConfigError(f"unknown step {kind!r} (known: {', '.join(sorted(STEPS))})", (*here, kind))
    return step_cls(parse_options(step_cls, options, (*here, kind)), ctx, (*here, kind), f"{ctx.label}{index + 1}")


def _compile(steps: Any, ctx: CompileContext, where: Where) -> Pipeline:
    if steps is None:
        steps = []
    if not isinstance(steps, list):
        raise StepConfigError(f"steps must be a list, got {type(steps).__name__}", where)
    return Pipeline([_make_step(raw, i, ctx, where) for i, raw in enumerate(steps)])


def compile_steps(
    steps: list[Any],
    *,
    named: Mapping[str, list[Any]] | None = None,
    storages: StorageAccess | None = None,
) -> Pipeline:
    """Compile a step list once per route: every config mistake is a StepConfigError here, not per record."""
    return _compile(steps, CompileContext(named, storages), ())


def deep_copy(value: Any) -> Any:
    """A copy of a JSON-like value, faster than copy.deepcopy for dicts and lists."""
    if isinstance(value, dict):
        return {k: deep_copy(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) if isinstance(v, dict | list) else v for v in value]
    return copy.deepcopy(value)


class Pipeline:
    """A compiled step list. ``apply`` never mutates its input: it works on a shallow copy (see paths.py)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        #: True when the pipeline may return other than exactly one entity
        self.fans_out = any(s.fans_out for s in steps)
        self._run: Callable[[Entity], list[Entity]] = self._build(0)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def _build(self, start: int) -> Callable[[Entity], list[Entity]]:
        """Plain steps run in a tight loop; at a fan-out step the rest runs once per child."""
        end = start
        while end < len(self.steps) and not self.steps[end].fans_out:
            end += 1
        plain: list[tuple[Callable[[Entity], Entity], str]] = [(s.apply, s.label) for s in self.steps[start:end]]
        if end == len(self.steps):

            def run_plain(entity: Entity) -> list[Entity]:
                return [_run_steps(plain, entity)]

            return run_plain
        fan = self.steps[end]
        rest = self._build(end + 1)

        def run_fan(entity: Entity) -> list[Entity]:
            entity = _run_steps(plain, entity)
            out: list[Entity] = []
            try:
                children = fan.expand(entity)
            except (RecordFiltered, RecordRejected):
                raise
            except (StepFailed, EvaluationError) as exc:
                raise RecordRejected(f"{fan.label}: {exc}") from None
            except Exception as exc:
                raise RecordRejected(f"{fan.label}: {type(exc).__name__}: {exc}") from exc
            for child in children:
                out.extend(rest(child))
            return out

        return run_fan

    def apply(self, entity: Entity) -> list[Entity]:
        """Run every step; raises RecordFiltered or RecordRejected. Usually one entity; split gives more."""
        if not self.steps:
            return [entity]
        return self._run(dict(entity))

    def apply_owned(self, entity: Entity) -> list[Entity]:
        """Like apply, for nested pipelines whose caller already owns the top-level dict."""
        return self._run(entity)

    def trace(self, entity: Entity) -> list[tuple[str, Any]]:
        """The entity (or entities, or the outcome) after each top-level step, for ``--trace``."""
        out: list[tuple[str, Any]] = [("input", deep_copy(entity))]
        items = [dict(entity)]
        for step in self.steps:
            single = Pipeline([step])
            try:
                items = [child for item in items for child in single._run(item)]
            except (RecordFiltered, RecordRejected) as exc:
                out.append((step.label, exc))
                return out
            snapshot = [deep_copy(i) for i in items]
            out.append((step.label, snapshot[0] if len(snapshot) == 1 else snapshot))
            items = [dict(i) for i in items]
        return out


def _run_steps(steps: list[tuple[Callable[[Entity], Entity], str]], entity: Entity) -> Entity:
    label = ""
    try:
        for apply, label in steps:  # noqa: B007 - the except clause reads label
            entity = apply(entity)
    except (RecordFiltered, RecordRejected):
        raise
    except (StepFailed, EvaluationError) as exc:
        raise RecordRejected(f"{label}: {exc}") from None
    except Exception as exc:
        raise RecordRejected(f"{label}: {type(exc).__name__}: {exc}") from exc
    return entity
