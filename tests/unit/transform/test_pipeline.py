"""Compiling step lists: config errors with key paths, trace, config tests, the registry."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import yaml
from step_cases import MemoryStorages

from crossdock.errors import RecordFiltered, RecordRejected, StepConfigError
from crossdock.transform import (
    STEPS,
    CompileContext,
    Step,
    StepOptions,
    compile_steps,
    register_step,
    run_transform_tests,
)


@pytest.mark.parametrize(
    ("steps", "path", "message"),
    [
        (
            [{"set": {"path": "a", "value": 1}}, {"set": {"path": "b", "value": "=a +"}}],
            (1, "set", "value"),
            "unexpected end",
        ),
        ([{"set": {"path": "a", "expr": "foo()"}}], (0, "set", "expr"), "unknown function foo()"),
        ([{"set": {"path": "a", "template": "{a"}}], (0, "set", "template"), "never closed"),
        ([{"set": {"path": "a"}}], (0, "set"), "exactly one of value, expr or template"),
        ([{"set": {"path": "a..b", "value": 1}}], (0, "set", "path"), "empty segment"),
        ([{"filter": "a >"}], (0, "filter", "condition"), "unexpected end"),
        (
            [{"if": {"condition": "a", "then": [{"math": {"path": "x", "expr": "1 +* 2"}}]}}],
            (0, "if", "then", 0, "math", "expr"),
            "unexpected '*'",
        ),
        (
            [{"for_each": {"path": "l", "steps": [{"nope": {}}]}}],
            (0, "for_each", "steps", 0, "nope"),
            "unknown step",
        ),
        ([{"convert": {"path": "a", "to": "integer"}}], (0, "convert", "to"), "Input should be"),
        (
            [{"convert": {"path": "a", "to": "date", "tz": "Mars/Base"}}],
            (0, "convert", "tz"),
            "unknown time zone",
        ),
        ([{"convert": {"path": "a", "to": "int", "tz": "UTC"}}], (0, "convert"), "only apply to date"),
        ([{"rename": {"from": "a", "to": "b", "extra": 1}}], (0, "rename", "extra"), "Extra inputs"),
        ([{"rename": {"from": "a", "to": "$1"}}], (0, "rename", "to"), "has no '*'"),
        ([{"string": {"path": "a", "op": "replace"}}], (0, "string"), "needs 'old'"),
        ([{"string": {"path": "a", "op": "upper", "sep": ","}}], (0, "string"), "does not take sep"),
        (
            [{"string": {"path": "a", "op": "regex_extract", "pattern": "("}}],
            (0, "string", "pattern"),
            "bad regular",
        ),
        (
            [{"string": {"path": "a", "op": "regex_extract", "pattern": "a", "group": 2}}],
            (0, "string", "group"),
            "no group",
        ),
        ([{"use": "nothing"}], (0, "use", "name"), "unknown transformer 'nothing'"),
        ([{"use": "loop"}], (0, "use", "name"), "uses itself"),
        ([{"lookup": {"storage": "s", "key": "a", "into": "b"}}], (0, "lookup"), "needs storage access"),
        ([{"python": "no_such_module_xyz:fn"}], (0, "python", "function"), "cannot import"),
        ([{"python": "os:no_such_function"}], (0, "python", "function"), "has no"),
        ([{"python": "not-an-entry-point"}], (0, "python", "function"), "no entry point"),
        ([{"merge": {"value": "plain"}}], (0, "merge", "value"), "mapping or an '=expression'"),
        (
            [{"json_to_xml": {"path": "a", "root": "1bad"}}],
            (0, "json_to_xml", "root"),
            "not a valid XML name",
        ),
        ([{"set": {"path": "a", "value": 1}, "remove": "b"}], (0,), "one-key mapping"),
        (["remove"], (0,), "one-key mapping"),
        ([{"defaults": {"a": "=b +"}}], (0, "defaults", "a"), "unexpected end"),
        ([{"reject": {"if": "x ==", "message": "m"}}], (0, "reject", "if"), "unexpected end"),
        ([{"split": {"path": "l", "keep": ["a..b"]}}], (0, "split", "keep", "a..b"), "empty segment"),
    ],
)
def test_bad_config_is_a_compile_time_error_with_a_key_path(
    steps: list[Any], path: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(StepConfigError) as err:
        compile_steps(steps, named={"loop": [{"use": "loop"}]})
    assert err.value.path == path
    assert message in err.value.message


def test_steps_must_be_a_list() -> None:
    with pytest.raises(StepConfigError):
        compile_steps({"set": {}})  # type: ignore[arg-type]


def test_error_inside_a_named_transformer_names_it() -> None:
    with pytest.raises(StepConfigError) as err:
        compile_steps([{"use": "shop"}], named={"shop": [{"filter": "a >"}]})
    assert err.value.path == (0, "use", "name")
    assert "in transformer 'shop'" in err.value.message


def test_empty_pipeline_is_false_and_returns_the_input() -> None:
    pipeline = compile_steps([])
    entity = {"a": 1}
    assert not pipeline
    assert pipeline.apply(entity) == [entity]
    assert compile_steps([{"remove": "a"}])


def test_reason_names_step_number_kind_path_and_type() -> None:
    pipeline = compile_steps(
        [
            {"rename": {"title": "name"}},
            {"set": {"path": "x", "value": 1}},
            {"convert": {"path": "price", "to": "float"}},
        ]
    )
    with pytest.raises(RecordRejected) as err:
        pipeline.apply({"price": "abc"})
    assert err.value.message == "step 3 (convert): cannot convert price ('abc', str) to float"


def test_trace_shows_the_entity_after_each_step() -> None:
    pipeline = compile_steps(
        [{"set": {"path": "a", "value": 1}}, {"split": {"path": "l"}}, {"set": {"path": "b", "value": 2}}]
    )
    trace = pipeline.trace({"l": [{"x": 1}, {"x": 2}]})
    assert [label for label, _ in trace] == ["input", "step 1 (set)", "step 2 (split)", "step 3 (set)"]
    assert trace[1][1] == {"l": [{"x": 1}, {"x": 2}], "a": 1}
    assert trace[3][1] == [{"x": 1, "b": 2}, {"x": 2, "b": 2}]


def test_trace_stops_at_the_outcome() -> None:
    pipeline = compile_steps([{"filter": "a"}, {"set": {"path": "b", "value": 1}}])
    trace = pipeline.trace({})
    assert [label for label, _ in trace] == ["input", "step 1 (filter)"]
    assert isinstance(trace[-1][1], RecordFiltered)


def test_trace_snapshots_do_not_change_later() -> None:
    pipeline = compile_steps([{"set": {"path": "a.b", "value": 1}}, {"set": {"path": "a.b", "value": 2}}])
    trace = pipeline.trace({})
    assert trace[1][1] == {"a": {"b": 1}}


def test_split_children_do_not_share_writes() -> None:
    pipeline = compile_steps(
        [{"split": {"path": "l", "keep": ["meta"]}}, {"set": {"path": "meta.seen", "value": "=x"}}]
    )
    entity = {"meta": {"k": 1}, "l": [{"x": 1}, {"x": 2}]}
    out = pipeline.apply(entity)
    assert [o["meta"] for o in out] == [{"k": 1, "seen": 1}, {"k": 1, "seen": 2}]
    assert entity["meta"] == {"k": 1}


def test_the_same_named_transformer_compiles_once() -> None:
    pipeline = compile_steps(
        [{"use": "n"}, {"use": "n"}], named={"n": [{"math": {"path": "c", "expr": "coalesce(c, 0) + 1"}}]}
    )
    assert pipeline.steps[0].pipeline is pipeline.steps[1].pipeline  # type: ignore[attr-defined]
    assert pipeline.apply({}) == [{"c": 2}]


def test_third_party_steps_join_the_registry() -> None:
    class ShoutOptions(StepOptions):
        path: str

    class Shout(Step):
        """Add an exclamation mark."""

        kind = "shout_test"
        Options: ClassVar[type[StepOptions]] = ShoutOptions

        def compile(self, options: Any, ctx: CompileContext, where: tuple[str | int, ...]) -> None:
            self.path = options.path

        def apply(self, entity: dict[str, Any]) -> dict[str, Any]:
            entity[self.path] = f"{entity[self.path]}!"
            return entity

    register_step(Shout)
    try:
        assert compile_steps([{"shout_test": {"path": "a"}}]).apply({"a": "hi"}) == [{"a": "hi!"}]
        with pytest.raises(RecordRejected, match=r"step 1 \(shout_test\): KeyError"):
            compile_steps([{"shout_test": {"path": "a"}}]).apply({})
    finally:
        del STEPS["shout_test"]


def test_every_step_has_a_docstring_and_options_model() -> None:
    for kind, cls in STEPS.items():
        assert cls.kind == kind
        assert cls.__doc__ and cls.__doc__.strip(), kind
        assert issubclass(cls.Options, StepOptions), kind
        assert cls.Options is not StepOptions, kind


CONFIG = yaml.safe_load(
    """
transform:
  - rename: {title: name}
  - filter: "stock > 0"
  - reject: {if: "not sku", message: "no sku"}
  - convert: {path: price, to: cents}
tests:
  - name: maps a product
    input: {sku: a, title: Stuhl, stock: 1, price: "1.50"}
    expected: {sku: a, name: Stuhl, stock: 1, price: 150}
  - input: {sku: a, stock: 0}
    expected: {filtered: true}
  - input: {sku: a, stock: 0}
    expected: {filtered: "stock > 0"}
  - input: {stock: 1}
    expected: {rejected: "no sku"}
"""
)


def test_config_tests_pass() -> None:
    pipeline = compile_steps(CONFIG["transform"])
    assert run_transform_tests(pipeline, CONFIG["tests"]) == []


def test_config_test_failures_are_readable() -> None:
    pipeline = compile_steps(CONFIG["transform"])
    tests = [
        {
            "name": "wrong price",
            "input": {"sku": "a", "title": "Stuhl", "stock": 1, "price": "1.50"},
            "expected": {"sku": "a", "name": "Stuhl", "stock": 1, "price": 151},
        },
        {"input": {"sku": "a", "stock": 1}, "expected": {"filtered": True}},
        {"input": {"sku": "a", "stock": 0}, "expected": {"rejected": "x"}},
        {"input": {"stock": 1}, "expected": {"rejected": "price"}},
        {"input": {"sku": "a", "stock": 0}, "expected": {"sku": "a"}},
        {"input": {"sku": "a", "stock": 0}, "expected": {"filtered": "other reason"}},
        {"input": "not an object", "expected": {}},
        {"expected": {}},
    ]
    failures = run_transform_tests(pipeline, tests)  # type: ignore[arg-type]
    assert [f.index for f in failures] == [0, 1, 2, 3, 4, 5, 6, 7]
    first = failures[0]
    assert first.name == "wrong price"
    assert '-  "price": 151,' in first.diff and '+  "price": 150,' in first.diff
    assert first.diff.startswith("--- expected\n+++ actual")
    assert str(first).startswith("test 1 (wrong price): the output differs\n---")
    assert "expected the record to be filtered, got {" in failures[1].message
    assert failures[2].message == "expected the record to be rejected, got filtered (filter: stock > 0)"
    assert failures[3].message == "rejected with 'no sku', which lacks 'price'"
    assert "expected a record, got filtered" in failures[4].message
    assert "lacks 'other reason'" in failures[5].message
    assert "'input' must be an object" in failures[6].message
    assert "needs 'input' and 'expected'" in failures[7].message


def test_config_test_with_split_expects_a_list() -> None:
    pipeline = compile_steps([{"split": {"path": "l"}}])
    ok = [{"input": {"l": [{"a": 1}, {"a": 2}]}, "expected": [{"a": 1}, {"a": 2}]}]
    assert run_transform_tests(pipeline, ok) == []
    bad = [{"input": {"l": [{"a": 1}, {"a": 2}]}, "expected": [{"a": 1}]}]
    assert run_transform_tests(pipeline, bad)[0].message == "the output differs"


def test_storage_round_trip_between_save_and_lookup() -> None:
    storages = MemoryStorages()
    save = compile_steps([{"save": {"storage": "prices", "key": "sku", "value": "=price"}}], storages=storages)
    lookup = compile_steps([{"lookup": {"storage": "prices", "key": "sku", "into": "old_price"}}], storages=storages)
    save.apply({"sku": "a", "price": 3})
    assert lookup.apply({"sku": "a"}) == [{"sku": "a", "old_price": 3}]
