"""The expression language: evaluation, the fast path, compile-time errors, templates and identifiers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from crossdock.errors import StepConfigError
from crossdock.transform import (
    EvaluationError,
    compile_condition,
    compile_expression,
    compile_identifier,
    compile_template,
)

E = {
    "sku": "ab-1",
    "price": 12.5,
    "qty": 3,
    "stock": 0,
    "status": "active",
    "name": "Größe",
    "lines": [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 5}],
    "attrs": {"odd key": "v", "0": "zero-key"},
    "tags": [],
    "none": None,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sku", "ab-1"),
        ("=sku", "ab-1"),
        ("lines.1.sku", "y"),
        ("lines[0].qty", 2),
        ("lines[-1].sku", "y"),
        ('attrs["odd key"]', "v"),
        ("attrs['odd key']", "v"),
        ("attrs.0", "zero-key"),
        ("lines[qty - 2].sku", "y"),
        ("missing.deep.path", None),
        ("lines.9.sku", None),
        ("sku.x", None),
        ("price * qty", 37.5),
        ("qty // 2 + qty % 2", 2),
        ("-qty + 1", -2),
        ("(1 + 2) * 3", 9),
        ("1 + 2 * 3", 7),
        ("price / 2", 6.25),
        ("'a' + 'b'", "ab"),
        ("[1, 'x', null, true]", [1, "x", None, True]),
        ("{a: 1, 'b c': sku}", {"a": 1, "b c": "ab-1"}),
        ("missing * 2", None),
        ("stock > 0", False),
        ("qty >= 3 and status == 'active'", True),
        ("stock > 0 or qty > 2", True),
        ("not stock", True),
        ("not not sku", True),
        ("status != 'active'", False),
        ("status in ['active', 'draft']", True),
        ("status not in ['active']", False),
        ("'b' in sku", True),
        ("1 in sku", False),
        ("sku in missing", False),
        ("[1] in [[1]]", True),
        ("sku matches '^ab-\\d$'", True),
        ("qty matches '3'", False),
        ("name matches 'öß'", True),
        ("missing > 1", False),
        ("sku > 1", False),
        ("exists(none)", True),
        ("exists(missing)", False),
        ("exists(lines.1.sku)", True),
        ("upper(name)", "GRÖSSE"),
        ("lower(missing)", None),
        ("trim('  x ')", "x"),
        ("len(lines) + len(tags) + len(sku)", 6),
        ("str(qty) + '!'", "3!"),
        ("int('42') + int(2.9)", 44),
        ("float('1.5')", 1.5),
        ("round(price / 3, 2)", 4.17),
        ("concat(sku, '/', qty, missing)", "ab-1/3"),
        ("coalesce(missing, '', none, 'x')", "x"),
        ("join(['a', 1], '-')", "a-1"),
        ("split('a b')", ["a", "b"]),
        ("replace(sku, '-', '_')", "ab_1"),
        ("min(3, 1, none) + max([4, 2])", 5),
        ("abs(-2)", 2),
        ("title('ab cd')", "Ab Cd"),
        ("true and null", None),
        ("'é' == 'é'", True),
    ],
)
def test_evaluation(text: str, expected: Any) -> None:
    expr = compile_expression(text)
    assert expr(E) == expected
    assert expr.source == text.removeprefix("=")


def test_plain_path_takes_the_fast_path() -> None:
    assert compile_expression("lines.0.sku").path == ("lines", 0, "sku")
    assert compile_expression('a["b c"]').path == ("a", "b c")
    assert compile_expression("a + 1").path is None


def test_constants_fold() -> None:
    expr = compile_expression("1 + 2 * 3")
    assert expr.is_constant and expr.constant == 7


def test_now_is_not_folded() -> None:
    expr = compile_expression("now()")
    assert not expr.is_constant
    assert expr({}).endswith("Z")


def test_missing_paths_never_raise_on_odd_entities() -> None:
    expr = compile_expression("a.b.c")
    for entity in ({}, {"a": None}, {"a": 1}, {"a": [1]}, {"a": {"b": "str"}}):
        assert expr(entity) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upper(qty)", "upper() expects a string, got 3 (int)"),
        ("sku * 2", "cannot compute 'ab-1' (str) * 2 (int)"),
        ("qty / stock", "division by zero"),
        ("int(sku)", "int() cannot convert 'ab-1' (str)"),
        ("len(qty)", "len() expects"),
        ("sku matches missing_pattern", None),
    ],
)
def test_evaluation_errors(text: str, message: str | None) -> None:
    expr = compile_expression(text)
    if message is None:
        assert expr(E) is False
        return
    with pytest.raises(EvaluationError, match=re.escape(message)):
        expr(E)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty expression"),
        ("a +", "unexpected end"),
        ("a + * b", "unexpected '*'"),
        ("(a", "expected ')'"),
        ("a b", "unexpected 'b'"),
        ("foo(1)", "unknown function foo()"),
        ("upper()", "upper() takes 1 argument(s), got 0"),
        ("replace(a)", "replace() takes 3 argument(s)"),
        ("exists(a + 1)", "exists() takes one path"),
        ("a matches '['", "bad regular expression"),
        ("a matches 1", "matches needs a string"),
        ("1 / 0", "division by zero"),
        ("int('x')", "int() cannot convert 'x' (str)"),
        ("a..b", "expected a key after '.'"),
        ("a ? b", "unexpected '?'"),
        ("'open", "unexpected"),
        ("and", "unexpected keyword 'and'"),
        ("__import__('os')", "unknown function __import__()"),
        ("a.upper()", "only named functions can be called"),
        ("[1, 2", "expected ',' or ']'"),
    ],
)
def test_compile_errors(text: str, message: str) -> None:
    with pytest.raises(StepConfigError) as err:
        compile_expression(text, path=(2, "set", "value"))
    assert message in err.value.message
    assert err.value.path == (2, "set", "value")


def test_non_string_expression_is_a_config_error() -> None:
    with pytest.raises(StepConfigError):
        compile_expression(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://shop/{sku}", "https://shop/ab-1"),
        ("{sku}-{qty * 2}", "ab-1-6"),
        ("{{literal}} {sku}", "{literal} ab-1"),
        ("100% {name}", "100% Größe"),
        ("{missing}|{none}|{tags}|{stock > 1}", "||[]|false"),
        ("{attrs['odd key']}", "v"),
        ("{ {a: 1} }", '{"a":1}'),
        ("plain", "plain"),
    ],
)
def test_templates(template: str, expected: str) -> None:
    assert compile_template(template)(E) == expected


@pytest.mark.parametrize("template", ["{sku", "a}b", "{}", "{sku +}"])
def test_bad_templates(template: str) -> None:
    with pytest.raises(StepConfigError):
        compile_template(template, path=(0, "set", "template"))


@pytest.mark.parametrize(
    ("spec", "entity", "expected"),
    [
        ("sku", {"sku": "a"}, "a"),
        ("sku", {"sku": 12}, "12"),
        ("sku", {"sku": ""}, None),
        ("sku", {}, None),
        ("sku", {"sku": {"x": 1}}, None),
        ("[store, sku]", {"store": 1, "sku": "ä"}, "1:ä"),
        ("[store, sku]", {"store": 1}, None),
        (["store", "sku"], {"store": "s", "sku": "x"}, "s:x"),
        (["store", "sku"], {"store": "", "sku": "x"}, None),
        ("lower(sku)", {"sku": "AB"}, "ab"),
    ],
)
def test_identifier(spec: Any, entity: dict[str, Any], expected: str | None) -> None:
    assert compile_identifier(spec)(entity) == expected


@pytest.mark.parametrize("spec", ["", "[]", [], "a +"])
def test_bad_identifier(spec: Any) -> None:
    with pytest.raises(StepConfigError):
        compile_identifier(spec)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"all": [{"exists": "sku"}, {"gt": {"path": "qty", "value": 2}}]}, True),
        ({"any": [{"equals": {"path": "stock", "value": 1}}, {"lte": {"path": "stock", "value": 0}}]}, True),
        ({"not": {"one_of": {"path": "status", "values": ["active"]}}}, False),
        ({"matches": {"path": "name", "pattern": "^Gr"}}, True),
        ({"not_equals": {"path": "qty", "value": "=lines.0.qty"}}, True),
        ({"lt": {"path": "missing", "value": 1}}, False),
        ("qty == 3", True),
        (False, False),
    ],
)
def test_structured_conditions(spec: Any, expected: bool) -> None:
    assert compile_condition(spec)(E) is expected


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"al": []}, (0, "if", "condition", "al")),
        ({"all": []}, (0, "if", "condition", "all")),
        ({"all": [{"exists": 1}]}, (0, "if", "condition", "all", 0, "exists")),
        ({"gt": {"path": "a"}}, (0, "if", "condition", "gt")),
        ({"matches": {"path": "a", "pattern": "("}}, (0, "if", "condition", "matches", "pattern")),
        ({"one_of": {"path": "a", "values": 1}}, (0, "if", "condition", "one_of", "values")),
        ({"a": 1, "b": 2}, (0, "if", "condition")),
    ],
)
def test_bad_structured_conditions(spec: Any, path: tuple[Any, ...]) -> None:
    with pytest.raises(StepConfigError) as err:
        compile_condition(spec, path=(0, "if", "condition"))
    assert err.value.path == path
