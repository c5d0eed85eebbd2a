"""Helpers for the transform tests: run a step list on an input and compare with the expected outcome."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from crossdock.errors import RecordFiltered, RecordRejected
from crossdock.transform import compile_steps


@dataclass(frozen=True)
class Filtered:
    """The case expects RecordFiltered whose reason contains ``reason``."""

    reason: str = ""


@dataclass(frozen=True)
class Rejected:
    """The case expects RecordRejected whose reason contains ``reason``."""

    reason: str = ""


class MemoryStorages:
    """A StorageAccess for tests: a dict per storage."""

    def __init__(self, data: dict[str, dict[str, Any]] | None = None) -> None:
        self.data: dict[str, dict[str, Any]] = data or {}

    def storage_get(self, storage: str, key: str) -> Any | None:
        return self.data.get(storage, {}).get(key)

    def storage_put(self, storage: str, key: str, value: Any) -> None:
        self.data.setdefault(storage, {})[key] = value


def check_case(steps: list[Any], entity: dict[str, Any], expected: Any, **kwargs: Any) -> None:
    """Apply and compare with expected (dict, list, Filtered, Rejected); the input must not change."""
    pipeline = compile_steps(steps, **kwargs)
    before = copy.deepcopy(entity)
    if isinstance(expected, Filtered):
        with pytest.raises(RecordFiltered) as filtered:
            pipeline.apply(entity)
        assert expected.reason in filtered.value.message
    elif isinstance(expected, Rejected):
        with pytest.raises(RecordRejected) as rejected:
            pipeline.apply(entity)
        assert expected.reason in rejected.value.message
    else:
        result = pipeline.apply(entity)
        assert result == (expected if isinstance(expected, list) else [expected])
        # the result must be independent of the input: mutating it must not leak back
        for item in result:
            item["__probe__"] = 1
    assert entity == before, "the pipeline mutated its input"
