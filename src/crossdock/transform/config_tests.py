"""Tests written inside the config (``tests: [{input, expected}]``), run by ``crossdock check``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import orjson

from crossdock.errors import RecordFiltered, RecordRejected
from crossdock.transform.pipeline import Pipeline


@dataclass(frozen=True)
class TestFailure:
    """One config test that did not hold: which one, why, and a unified diff of expected vs actual."""

    __test__ = False  # not a pytest test class, despite the name

    index: int
    name: str
    message: str
    diff: str = ""

    def __str__(self) -> str:
        head = f"test {self.index + 1}{f' ({self.name})' if self.name else ''}: {self.message}"
        return f"{head}\n{self.diff}" if self.diff else head


def pretty(value: Any) -> str:
    """Stable, readable JSON for diffs (sorted keys, two-space indent)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def _diff(expected: Any, actual: Any) -> str:
    lines = difflib.unified_diff(
        pretty(expected).splitlines(), pretty(actual).splitlines(), "expected", "actual", lineterm=""
    )
    return "\n".join(lines)


def _outcome_text(outcome: Any) -> str:
    if isinstance(outcome, RecordFiltered):
        return f"filtered ({outcome.message})"
    if isinstance(outcome, RecordRejected):
        return f"rejected ({outcome.message})"
    if isinstance(outcome, list) and len(outcome) == 1:
        return pretty(outcome[0])
    return pretty(outcome)


def run_one(pipeline: Pipeline, index: int, test: Any) -> TestFailure | None:
    """Run one test case; None when it holds."""
    name = ""
    if not isinstance(test, dict) or "input" not in test or "expected" not in test:
        return TestFailure(index, name, "a test needs 'input' and 'expected'")
    name = str(test.get("name") or "")
    entity, expected = test["input"], test["expected"]
    if not isinstance(entity, dict):
        return TestFailure(index, name, f"'input' must be an object, got {type(entity).__name__}")
    outcome: Any
    try:
        outcome = pipeline.apply(entity)
    except (RecordFiltered, RecordRejected) as exc:
        outcome = exc
    except Exception as exc:
        return TestFailure(index, name, f"the transformer crashed: {type(exc).__name__}: {exc}")

    if isinstance(expected, dict) and set(expected) == {"filtered"}:
        want = expected["filtered"]
        if not isinstance(outcome, RecordFiltered):
            return TestFailure(index, name, f"expected the record to be filtered, got {_outcome_text(outcome)}")
        if isinstance(want, str) and want not in outcome.message:
            return TestFailure(index, name, f"filtered with {outcome.message!r}, which lacks {want!r}")
        if want is False:
            return TestFailure(index, name, "'filtered: false' is not a test; give the expected record")
        return None
    if isinstance(expected, dict) and set(expected) == {"rejected"}:
        want = expected["rejected"]
        if not isinstance(outcome, RecordRejected):
            return TestFailure(index, name, f"expected the record to be rejected, got {_outcome_text(outcome)}")
        if isinstance(want, str) and want not in outcome.message:
            return TestFailure(index, name, f"rejected with {outcome.message!r}, which lacks {want!r}")
        return None
    if isinstance(outcome, RecordFiltered | RecordRejected):
        return TestFailure(index, name, f"expected a record, got {_outcome_text(outcome)}")
    actual: Any = outcome[0] if isinstance(expected, dict) and len(outcome) == 1 else outcome
    if actual != expected:
        return TestFailure(index, name, "the output differs", _diff(expected, actual))
    return None


def run_transform_tests(pipeline: Pipeline, tests: list[dict[str, Any]]) -> list[TestFailure]:
    """Run every config test against a compiled pipeline; an empty list means all held."""
    failures = []
    for i, test in enumerate(tests or []):
        failure = run_one(pipeline, i, test)
        if failure is not None:
            failures.append(failure)
    return failures
