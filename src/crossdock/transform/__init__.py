"""Placeholder until the transformer language lands (branch ``transform``): identifiers only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crossdock.errors import StepConfigError


class Pipeline:
    def __init__(self, steps: list[Any]) -> None:
        if steps:
            raise StepConfigError("transformer steps are not available in this build yet", (0,))

    def apply(self, entity: dict[str, Any]) -> list[dict[str, Any]]:
        return [entity]

    def __bool__(self) -> bool:
        return False


def compile_steps(steps: list[Any], **_: Any) -> Pipeline:
    return Pipeline(steps)


def compile_identifier(spec: str | list[str]) -> Callable[[Mapping[str, Any]], str | None]:
    parts = spec if isinstance(spec, list) else [p.strip() for p in spec.strip("[] ").split(",")]

    def get(entity: Mapping[str, Any]) -> str | None:
        values = []
        for part in parts:
            value: Any = entity
            for key in part.split("."):
                value = value.get(key) if isinstance(value, Mapping) else None
            if value is None or value == "":
                return None
            values.append(str(value))
        return ":".join(values)

    return get
