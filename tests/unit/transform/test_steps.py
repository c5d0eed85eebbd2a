"""One table per step: normal values, missing paths, wrong types, unicode and empty lists."""

from __future__ import annotations

from typing import Any

import pytest
from step_cases import Filtered, MemoryStorages, Rejected, check_case

Case = tuple[str, list[Any], dict[str, Any], Any]


def cases(*rows: Case) -> Any:
    return pytest.mark.parametrize(("steps", "entity", "expected"), [r[1:] for r in rows], ids=[r[0] for r in rows])


@cases(
    ("literal", [{"set": {"path": "a", "value": 1}}], {}, {"a": 1}),
    ("literal null", [{"set": {"path": "a", "value": None}}], {"a": 1}, {"a": None}),
    (
        "expression",
        [{"set": {"path": "n", "value": "=upper(title)"}}],
        {"title": "é x"},
        {"title": "é x", "n": "É X"},
    ),
    ("expr key", [{"set": {"path": "n", "expr": "a + b"}}], {"a": 1, "b": 2}, {"a": 1, "b": 2, "n": 3}),
    ("template", [{"set": {"path": "u", "template": "s/{sku}"}}], {"sku": "ü1"}, {"sku": "ü1", "u": "s/ü1"}),
    ("template missing", [{"set": {"path": "u", "template": "s/{sku}"}}], {}, {"u": "s/"}),
    ("nested path creates", [{"set": {"path": "a.b.c", "value": 1}}], {}, {"a": {"b": {"c": 1}}}),
    (
        "nested keeps input",
        [{"set": {"path": "a.b", "value": 2}}],
        {"a": {"b": 1, "c": 3}},
        {"a": {"b": 2, "c": 3}},
    ),
    ("list index", [{"set": {"path": "l[0].x", "value": 2}}], {"l": [{"x": 1}]}, {"l": [{"x": 2}]}),
    ("missing path expr", [{"set": {"path": "n", "value": "=a.b.c"}}], {"a": 1}, {"a": 1, "n": None}),
    ("literal list fresh", [{"set": {"path": "l", "value": []}}], {}, {"l": []}),
    (
        "wrong type",
        [{"set": {"path": "n", "value": "=upper(a)"}}],
        {"a": 5},
        Rejected("step 1 (set): upper()"),
    ),
    ("empty list len", [{"set": {"path": "n", "value": "=len(l)"}}], {"l": []}, {"l": [], "n": 0}),
)
def test_set(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


@cases(
    ("rename", [{"rename": {"from": "title", "to": "name"}}], {"title": "x"}, {"name": "x"}),
    ("rename pairs", [{"rename": {"a": "b", "c": "d.e"}}], {"a": 1, "c": 2}, {"b": 1, "d": {"e": 2}}),
    ("rename missing", [{"rename": {"from": "title", "to": "name"}}], {"x": 1}, {"x": 1}),
    (
        "rename nested",
        [{"rename": {"from": "a.b", "to": "c"}}],
        {"a": {"b": 1, "z": 0}},
        {"a": {"z": 0}, "c": 1},
    ),
    ("rename unicode", [{"rename": {"from": "größe", "to": "size"}}], {"größe": "M"}, {"size": "M"}),
    (
        "move wildcard",
        [{"move": {"from": "attr_*", "to": "attributes.$1"}}],
        {"attr_c": "r", "attr_s": "M", "x": 1},
        {"x": 1, "attributes": {"c": "r", "s": "M"}},
    ),
    ("move wildcard none", [{"move": {"from": "attr_*", "to": "a.$1"}}], {"x": 1}, {"x": 1}),
    ("copy", [{"copy": {"from": "a", "to": "b"}}], {"a": [1]}, {"a": [1], "b": [1]}),
    (
        "copy wildcard nested",
        [{"copy": {"from": "p.*_id", "to": "ids.$1"}}],
        {"p": {"a_id": 1, "b": 2}},
        {"p": {"a_id": 1, "b": 2}, "ids": {"a": 1}},
    ),
    ("copy two captures", [{"copy": {"from": "*_*", "to": "$2.$1"}}], {"a_b": 1}, {"a_b": 1, "b": {"a": 1}}),
    (
        "copy from list item",
        [{"copy": {"from": "l.0", "to": "first"}}],
        {"l": ["x"]},
        {"l": ["x"], "first": "x"},
    ),
    ("copy empty list", [{"copy": {"from": "l", "to": "m"}}], {"l": []}, {"l": [], "m": []}),
    ("move into non-object", [{"move": {"from": "a", "to": "b.c"}}], {"a": 1, "b": 2}, {"b": {"c": 1}}),
)
def test_copy_move_rename(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


@cases(
    ("one", [{"remove": "a"}], {"a": 1, "b": 2}, {"b": 2}),
    (
        "list and pattern",
        [{"remove": ["a", "tmp_*"]}],
        {"a": 1, "tmp_x": 1, "tmp_": 2, "tmpx": 3},
        {"tmpx": 3},
    ),
    ("nested", [{"remove": "a.b"}], {"a": {"b": 1, "c": 2}}, {"a": {"c": 2}}),
    ("nested pattern", [{"remove": "a.*"}], {"a": {"b": 1, "c": 2}}, {"a": {}}),
    ("missing", [{"remove": ["x", "a.b.c", "z_*"]}], {"a": 1}, {"a": 1}),
    ("list item", [{"remove": "l.0"}], {"l": [1, 2]}, {"l": [2]}),
    ("unicode", [{"remove": "ümlaut"}], {"ümlaut": 1}, {}),
    ("empty list value", [{"remove": "l"}], {"l": []}, {}),
)
def test_remove(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


M = {"map": {"path": "c", "values": {"A": "apparel", "B": "books", 1: "one"}, "default": "other"}}


@cases(
    ("hit", [M], {"c": "A"}, {"c": "apparel"}),
    ("default", [M], {"c": "Z"}, {"c": "other"}),
    ("int key", [M], {"c": 1}, {"c": "one"}),
    ("str of int key", [M], {"c": "1"}, {"c": "one"}),
    ("missing", [M], {"x": 1}, {"x": 1}),
    ("unhashable", [M], {"c": []}, {"c": "other"}),
    ("no default keeps", [{"map": {"path": "c", "values": {"A": "a"}}}], {"c": "Q"}, {"c": "Q"}),
    ("into", [{"map": {"path": "c", "values": {"A": "a"}, "into": "d"}}], {"c": "A"}, {"c": "A", "d": "a"}),
    ("unicode", [{"map": {"path": "c", "values": {"Ä": "ä"}}}], {"c": "Ä"}, {"c": "ä"}),
)
def test_map(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


def conv(to: str, **kw: Any) -> list[Any]:
    return [{"convert": {"path": "v", "to": to, **kw}}]


@cases(
    ("int from str", conv("int"), {"v": " 42 "}, {"v": 42}),
    ("int from 2.0", conv("int"), {"v": "2.0"}, {"v": 2}),
    (
        "int fraction",
        conv("int"),
        {"v": 2.5},
        Rejected("step 1 (convert): cannot convert v (2.5, float) to int"),
    ),
    ("int bad", conv("int"), {"v": "abc"}, Rejected("cannot convert v ('abc', str) to int")),
    ("int empty", conv("int"), {"v": ""}, {"v": None}),
    ("int list", conv("int"), {"v": []}, Rejected("cannot convert v ([], list) to int")),
    ("float", conv("float"), {"v": "1.5"}, {"v": 1.5}),
    ("float comma", conv("float", decimal_comma=True), {"v": "1.234,5"}, {"v": 1234.5}),
    ("float bad", conv("float"), {"v": "abc"}, Rejected("cannot convert v ('abc', str) to float")),
    ("float nan", conv("float"), {"v": "nan"}, Rejected("to float")),
    ("decimal", conv("decimal", scale=2), {"v": "1.005"}, {"v": "1.01"}),
    ("decimal float", conv("decimal"), {"v": 0.1}, {"v": "0.1"}),
    ("str", conv("str"), {"v": True}, {"v": "true"}),
    ("str dict", conv("str"), {"v": {"a": 1}}, {"v": '{"a":1}'}),
    ("bool yes", conv("bool"), {"v": "Yes"}, {"v": True}),
    ("bool 0", conv("bool"), {"v": 0}, {"v": False}),
    ("bool bad", conv("bool"), {"v": "maybe"}, Rejected("to bool")),
    ("cents str", conv("cents"), {"v": "19.99"}, {"v": 1999}),
    ("cents float", conv("cents"), {"v": 19.99}, {"v": 1999}),
    ("cents int", conv("cents"), {"v": 5}, {"v": 500}),
    ("cents symbol", conv("cents"), {"v": "€ 1.5"}, {"v": 150}),
    ("cents comma", conv("cents", decimal_comma=True), {"v": "1.234,56 €"}, {"v": 123456}),
    ("cents half up", conv("cents"), {"v": "0.125"}, {"v": 13}),
    ("cents negative", conv("cents"), {"v": "-2.50"}, {"v": -250}),
    ("cents bad", conv("cents"), {"v": "abc"}, Rejected("cannot convert v ('abc', str) to cents")),
    ("date iso", conv("date"), {"v": "2024-03-01T10:00:00Z"}, {"v": "2024-03-01"}),
    ("date tz", conv("date", tz="Europe/Berlin"), {"v": "2024-03-01T23:30:00Z"}, {"v": "2024-03-02"}),
    (
        "date format",
        conv("date", from_format="%d.%m.%Y", format="%Y/%m/%d"),
        {"v": "05.01.2024"},
        {"v": "2024/01/05"},
    ),
    (
        "datetime from_tz",
        conv("datetime", from_tz="Europe/Berlin", tz="UTC"),
        {"v": "2024-07-01 12:00"},
        {"v": "2024-07-01T10:00:00+00:00"},
    ),
    ("datetime epoch", conv("datetime"), {"v": 0}, {"v": "1970-01-01T00:00:00+00:00"}),
    ("timestamp", conv("timestamp"), {"v": "1970-01-01T00:01:00Z"}, {"v": 60}),
    ("date bad", conv("date"), {"v": "yesterday"}, Rejected("cannot convert v ('yesterday', str) to date")),
    ("date list", conv("date"), {"v": []}, Rejected("([], list)")),
    ("missing", conv("int"), {"x": 1}, {"x": 1}),
    ("null stays", conv("int"), {"v": None}, {"v": None}),
    ("on_error null", conv("int", on_error="null"), {"v": "x"}, {"v": None}),
    ("on_error keep", conv("int", on_error="keep"), {"v": "x"}, {"v": "x"}),
    ("into", conv("int", into="w"), {"v": "1"}, {"v": "1", "w": 1}),
    ("unicode digits", conv("int"), {"v": "٤٢"}, {"v": 42}),
)
def test_convert(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


def s(op: str, **kw: Any) -> list[Any]:
    return [{"string": {"path": "v", "op": op, **kw}}]


@cases(
    ("trim", s("trim"), {"v": "  a b \n"}, {"v": "a b"}),
    ("trim chars", s("trim", chars="-"), {"v": "--a-"}, {"v": "a"}),
    ("upper unicode", s("upper"), {"v": "straße"}, {"v": "STRASSE"}),
    ("lower", s("lower"), {"v": "ÄB"}, {"v": "äb"}),
    ("title", s("title"), {"v": "red shirt"}, {"v": "Red Shirt"}),
    ("replace", s("replace", old="-", new="_"), {"v": "a-b-c"}, {"v": "a_b_c"}),
    ("replace regex", s("replace", old=r"\s+", new=" ", regex=True), {"v": "a  \t b"}, {"v": "a b"}),
    ("extract", s("regex_extract", pattern=r"(\d+)\s*cm"), {"v": "width 30 cm"}, {"v": "30"}),
    ("extract no match", s("regex_extract", pattern=r"(\d+)", default="0"), {"v": "none"}, {"v": "0"}),
    ("extract named", s("regex_extract", pattern=r"(?P<n>\d+)", group="n"), {"v": "x7"}, {"v": "7"}),
    ("split", s("split", sep=","), {"v": "a,b"}, {"v": ["a", "b"]}),
    ("split empty", s("split", sep=","), {"v": ""}, {"v": []}),
    ("join", s("join", sep="|"), {"v": ["a", 1, None]}, {"v": "a|1|"}),
    ("join empty", s("join"), {"v": []}, {"v": ""}),
    ("join not list", s("join"), {"v": "x"}, Rejected("cannot join v ('x', str): not a list")),
    ("concat", s("concat", values=["=a", "-", "=b"]), {"a": "x", "b": 2}, {"a": "x", "b": 2, "v": "x-2"}),
    ("concat sep missing", s("concat", values=["=a", "=b"], sep=" "), {"a": "x"}, {"a": "x", "v": "x "}),
    ("truncate", s("truncate", length=3), {"v": "äöüß"}, {"v": "äöü"}),
    ("missing", s("upper"), {"x": 1}, {"x": 1}),
    ("null", s("upper"), {"v": None}, {"v": None}),
    (
        "wrong type",
        s("upper"),
        {"v": 12},
        Rejected("step 1 (string): cannot upper v (12, int): not a string"),
    ),
    ("into", s("upper", into="w"), {"v": "a"}, {"v": "a", "w": "A"}),
)
def test_string(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


@cases(
    (
        "multiply",
        [{"math": {"path": "t", "expr": "p * q"}}],
        {"p": 2.5, "q": 2},
        {"p": 2.5, "q": 2, "t": 5.0},
    ),
    ("round", [{"math": {"path": "t", "expr": "p / 3", "round": 2}}], {"p": 1}, {"p": 1, "t": 0.33}),
    ("missing rejects", [{"math": {"path": "t", "expr": "p * q"}}], {"p": 1}, Rejected("t = p * q is null")),
    ("missing null", [{"math": {"path": "t", "expr": "p * q", "on_null": "null"}}], {}, {"t": None}),
    ("missing skip", [{"math": {"path": "t", "expr": "p * q", "on_null": "skip"}}], {}, {}),
    (
        "string operand",
        [{"math": {"path": "t", "expr": "p * 2"}}],
        {"p": "x"},
        Rejected("cannot compute 'x' (str) * 2"),
    ),
    (
        "division by zero",
        [{"math": {"path": "t", "expr": "p / q"}}],
        {"p": 1, "q": 0},
        Rejected("division by zero"),
    ),
    ("not a number", [{"math": {"path": "t", "expr": "p + p"}}], {"p": "a"}, Rejected("gave ('aa', str)")),
    ("list len", [{"math": {"path": "n", "expr": "len(l) * 2"}}], {"l": []}, {"l": [], "n": 0}),
)
def test_math(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


IF = {
    "if": {
        "condition": "stock > 0",
        "then": [{"set": {"path": "s", "value": "in"}}],
        "else": [{"set": {"path": "s", "value": "out"}}],
    }
}


@cases(
    ("then", [IF], {"stock": 1}, {"stock": 1, "s": "in"}),
    ("else", [IF], {"stock": 0}, {"stock": 0, "s": "out"}),
    ("missing is false", [IF], {}, {"s": "out"}),
    ("wrong type is false", [IF], {"stock": "x"}, {"stock": "x", "s": "out"}),
    (
        "structured",
        [
            {
                "if": {
                    "condition": {"all": [{"exists": "a"}, {"one_of": {"path": "a", "values": [1, 2]}}]},
                    "then": [{"set": {"path": "ok", "value": True}}],
                }
            }
        ],
        {"a": 2},
        {"a": 2, "ok": True},
    ),
    (
        "structured matches",
        [{"if": {"condition": {"matches": {"path": "a", "pattern": "^ä"}}, "then": [{"remove": "a"}]}}],
        {"a": "äx"},
        {},
    ),
    (
        "nested failure label",
        [
            {"set": {"path": "x", "value": 1}},
            {"if": {"condition": True, "then": [{"convert": {"path": "p", "to": "int"}}]}},
        ],
        {"p": "x"},
        Rejected("step 2.then.1 (convert): cannot convert p ('x', str) to int"),
    ),
    (
        "then split",
        [{"if": {"condition": True, "then": [{"split": {"path": "l"}}]}}],
        {"l": [{"a": 1}, {"a": 2}]},
        [{"a": 1}, {"a": 2}],
    ),
)
def test_if(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


@cases(
    ("keeps", [{"filter": "stock > 0"}], {"stock": 1}, {"stock": 1}),
    ("drops", [{"filter": "stock > 0"}], {"stock": 0}, Filtered("filter: stock > 0")),
    ("missing drops", [{"filter": "stock > 0"}], {}, Filtered("filter: stock > 0")),
    ("wrong type drops", [{"filter": "stock > 0"}], {"stock": [1]}, Filtered("filter: stock > 0")),
    ("eval error drops", [{"filter": "upper(a) == 'X'"}], {"a": 1}, Filtered("not evaluated: upper()")),
    (
        "structured",
        [{"filter": {"not": {"equals": {"path": "s", "value": "draft"}}}}],
        {"s": "draft"},
        Filtered("not"),
    ),
    (
        "reason template",
        [{"filter": {"condition": "a", "reason": "no a on {sku}"}}],
        {"sku": "é"},
        Filtered("no a on é"),
    ),
    ("in list", [{"filter": "c in ['A', 'B']"}], {"c": "C"}, Filtered()),
    ("empty list falsy", [{"filter": "l"}], {"l": []}, Filtered()),
)
def test_filter(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


@cases(
    ("rejects", [{"reject": {"if": "not sku", "message": "no sku"}}], {"sku": ""}, Rejected("no sku")),
    ("passes", [{"reject": {"if": "not sku", "message": "no sku"}}], {"sku": "a"}, {"sku": "a"}),
    ("missing", [{"reject": {"if": "not sku", "message": "no sku"}}], {}, Rejected("no sku")),
    (
        "template",
        [{"reject": {"if": "price < 0", "message": "bad price {price} für {sku}"}}],
        {"price": -1, "sku": "x"},
        Rejected("bad price -1 für x"),
    ),
    ("always", [{"reject": "never"}], {}, Rejected("never")),
)
def test_reject(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


FE = {"for_each": {"path": "lines", "steps": [{"convert": {"path": "qty", "to": "int"}}, {"filter": "qty > 0"}]}}


@cases(
    ("applies", [FE], {"lines": [{"qty": "1"}, {"qty": "2"}]}, {"lines": [{"qty": 1}, {"qty": 2}]}),
    ("filters items", [FE], {"lines": [{"qty": "0"}, {"qty": "2"}]}, {"lines": [{"qty": 2}]}),
    ("empty list", [FE], {"lines": []}, {"lines": []}),
    ("missing", [FE], {}, {}),
    ("not a list", [FE], {"lines": "x"}, Rejected("step 1 (for_each): cannot loop over lines ('x', str)")),
    (
        "item error",
        [FE],
        {"lines": [{"qty": "1"}, {"qty": "x"}]},
        Rejected("step 1 (for_each): lines[1]: step 1 (convert): cannot convert qty ('x', str) to int"),
    ),
    (
        "scalars",
        [{"for_each": {"path": "tags", "steps": [{"string": {"path": "value", "op": "lower"}}]}}],
        {"tags": ["Ä", "B"]},
        {"tags": ["ä", "b"]},
    ),
    (
        "nested",
        [{"for_each": {"path": "a", "steps": [{"for_each": {"path": "b", "steps": [{"remove": "x"}]}}]}}],
        {"a": [{"b": [{"x": 1, "y": 2}]}]},
        {"a": [{"b": [{"y": 2}]}]},
    ),
)
def test_for_each(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


ORDER = {"order_id": 7, "customer": {"name": "Zoë"}, "lines": [{"sku": "a"}, {"sku": "b"}]}


@cases(
    (
        "items",
        [{"split": {"path": "lines", "keep": ["order_id"]}}],
        ORDER,
        [{"sku": "a", "order_id": 7}, {"sku": "b", "order_id": 7}],
    ),
    (
        "into and index",
        [{"split": {"path": "lines", "into": "line", "keep": {"customer": "customer.name"}, "index": "n"}}],
        ORDER,
        [
            {"line": {"sku": "a"}, "customer": "Zoë", "n": 0},
            {"line": {"sku": "b"}, "customer": "Zoë", "n": 1},
        ],
    ),
    (
        "then steps per child",
        [{"split": {"path": "lines"}}, {"string": {"path": "sku", "op": "upper"}}],
        ORDER,
        [{"sku": "A"}, {"sku": "B"}],
    ),
    (
        "child filtered",
        [{"split": {"path": "lines"}}, {"filter": "sku == 'b'"}],
        ORDER,
        Filtered("sku == 'b'"),
    ),
    (
        "empty filters",
        [{"split": {"path": "lines"}}],
        {"lines": []},
        Filtered("step 1 (split): lines is empty"),
    ),
    ("empty keep", [{"split": {"path": "lines", "on_empty": "keep"}}], {"lines": []}, {"lines": []}),
    ("empty reject", [{"split": {"path": "lines", "on_empty": "reject"}}], {}, Rejected("lines is empty")),
    ("not a list", [{"split": {"path": "lines"}}], {"lines": {"a": 1}}, Rejected("cannot split lines")),
    ("scalars", [{"split": {"path": "tags"}}], {"tags": ["ä", 1]}, [{"value": "ä"}, {"value": 1}]),
)
def test_split(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


def test_split_one_child_filtered_keeps_the_others() -> None:
    """A filter after split drops the whole record: children are not tasks yet, so the outcome is one."""
    check_case([{"split": {"path": "l"}}, {"filter": "x > 0"}], {"l": [{"x": 1}, {"x": 0}]}, Filtered())


@cases(
    (
        "fills missing and null",
        [{"defaults": {"currency": "EUR", "vat": 19}}],
        {"vat": None},
        {"vat": 19, "currency": "EUR"},
    ),
    ("keeps present", [{"defaults": {"currency": "EUR"}}], {"currency": "USD"}, {"currency": "USD"}),
    ("keeps falsy", [{"defaults": {"stock": 5}}], {"stock": 0}, {"stock": 0}),
    ("nested and expr", [{"defaults": {"a.b": "=x"}}], {"x": "ü"}, {"x": "ü", "a": {"b": "ü"}}),
    ("list default", [{"defaults": {"tags": []}}], {}, {"tags": []}),
    ("merge root", [{"merge": {"value": {"a": {"b": 1}}}}], {"a": {"c": 2}}, {"a": {"c": 2, "b": 1}}),
    ("merge path", [{"merge": {"path": "attrs", "value": {"x": [1]}}}], {}, {"attrs": {"x": [1]}}),
    (
        "merge expr",
        [{"merge": {"path": "a", "value": "=b"}}],
        {"a": {"x": 1}, "b": {"y": "ß"}},
        {"a": {"x": 1, "y": "ß"}, "b": {"y": "ß"}},
    ),
    ("merge null expr", [{"merge": {"path": "a", "value": "=b"}}], {"a": 1}, {"a": 1}),
    (
        "merge into scalar",
        [{"merge": {"path": "a", "value": {"x": 1}}}],
        {"a": 1},
        Rejected("cannot merge into a"),
    ),
    ("merge non-object", [{"merge": {"value": "=b"}}], {"b": [1]}, Rejected("cannot merge ([1], list)")),
)
def test_defaults_and_merge(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


LOOKUP = {"lookup": {"storage": "cats", "key": "cat_id", "into": "category"}}


@pytest.mark.parametrize(
    ("steps", "entity", "expected"),
    [
        ([LOOKUP], {"cat_id": 1}, {"cat_id": 1, "category": {"name": "Schuhe"}}),
        ([LOOKUP], {"cat_id": 2}, {"cat_id": 2}),
        ([LOOKUP], {}, {}),
        (
            [{"lookup": {**LOOKUP["lookup"], "field": "name"}}],
            {"cat_id": 1},
            {"cat_id": 1, "category": "Schuhe"},
        ),
        (
            [{"lookup": {**LOOKUP["lookup"], "default": "none"}}],
            {"cat_id": 9},
            {"cat_id": 9, "category": "none"},
        ),
        (
            [{"lookup": {**LOOKUP["lookup"], "required": True}}],
            {"cat_id": 9},
            Rejected("step 1 (lookup): no cats entry for cat_id = '9'"),
        ),
        ([{"lookup": {**LOOKUP["lookup"], "required": True}}], {"cat_id": []}, Rejected("no cats entry")),
        (
            [{"lookup": {"storage": "cats", "key": "=concat('', cat_id)", "into": "c", "field": "name"}}],
            {"cat_id": 1},
            {"cat_id": 1, "c": "Schuhe"},
        ),
    ],
    ids=["hit", "miss", "missing key", "field", "default", "required", "list key", "expr key"],
)
def test_lookup(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected, storages=MemoryStorages({"cats": {"1": {"name": "Schuhe"}}}))


def test_save() -> None:
    storages = MemoryStorages()
    check_case(
        [{"save": {"storage": "seen", "key": "sku", "value": "=price"}}],
        {"sku": "ä", "price": 1},
        {"sku": "ä", "price": 1},
        storages=storages,
    )
    check_case(
        [{"save": {"storage": "all", "key": "sku"}}],
        {"sku": "b", "l": []},
        {"sku": "b", "l": []},
        storages=storages,
    )
    check_case([{"save": {"storage": "seen", "key": "sku"}}], {}, Rejected("key sku is empty"), storages=storages)
    assert storages.data == {"seen": {"ä": 1}, "all": {"b": {"sku": "b", "l": []}}}


XML = '<product id="1"><name>Stühl</name><tag>a</tag><tag>b</tag><empty/></product>'
XML_JSON = {"product": {"@id": "1", "name": "Stühl", "tag": ["a", "b"], "empty": None}}


@cases(
    ("parse", [{"xml_to_json": {"path": "x"}}], {"x": XML}, {"x": XML_JSON}),
    (
        "parse into",
        [{"xml_to_json": {"path": "x", "into": "d"}}],
        {"x": "<a>1</a>"},
        {"x": "<a>1</a>", "d": {"a": "1"}},
    ),
    (
        "render",
        [{"json_to_xml": {"path": "x"}}],
        {"x": XML_JSON},
        {"x": XML.replace("<empty/>", "<empty />")},
    ),
    (
        "render root",
        [{"json_to_xml": {"path": "x", "root": "p", "declaration": True}}],
        {"x": {"n": 1}},
        {"x": '<?xml version="1.0" encoding="UTF-8"?>\n<p><n>1</n></p>'},
    ),
    (
        "round trip",
        [{"json_to_xml": {"path": "x"}}, {"xml_to_json": {"path": "x"}}],
        {"x": XML_JSON},
        {"x": XML_JSON},
    ),
    ("missing", [{"xml_to_json": {"path": "x"}}], {}, {}),
    (
        "not xml",
        [{"xml_to_json": {"path": "x"}}],
        {"x": "<a>"},
        Rejected("cannot parse x as XML: not well-formed"),
    ),
    ("not text", [{"xml_to_json": {"path": "x"}}], {"x": []}, Rejected("cannot parse x ([], list) as XML")),
    (
        "doctype refused",
        [{"xml_to_json": {"path": "x"}}],
        {"x": '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'},
        Rejected("DTDs and entity declarations are not allowed"),
    ),
    ("no root", [{"json_to_xml": {"path": "x"}}], {"x": {"a": 1, "b": 2}}, Rejected("give 'root'")),
    (
        "bad name",
        [{"json_to_xml": {"path": "x", "root": "r"}}],
        {"x": {"a b": 1}},
        Rejected("not a valid XML name"),
    ),
    ("empty list child", [{"json_to_xml": {"path": "x", "root": "r"}}], {"x": {"a": []}}, {"x": "<r />"}),
)
def test_xml(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)


NAMED = {
    "shop": [{"rename": {"title": "name"}}, {"use": "common"}],
    "common": [{"defaults": {"currency": "EUR"}}],
    "lines": [{"split": {"path": "l"}}],
    "bad": [{"convert": {"path": "p", "to": "int"}}],
}


@cases(
    ("named", [{"use": "shop"}], {"title": "ä"}, {"name": "ä", "currency": "EUR"}),
    ("named fan-out", [{"use": "lines"}], {"l": [{"a": 1}, {"a": 2}]}, [{"a": 1}, {"a": 2}]),
    ("named failure", [{"use": "bad"}], {"p": "x"}, Rejected("step bad > 1 (convert): cannot convert p")),
    ("missing values", [{"use": "shop"}], {}, {"currency": "EUR"}),
)
def test_use(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected, named=NAMED)


def add_one(entity: dict[str, Any]) -> dict[str, Any]:
    entity["n"] = entity.get("n", 0) + 1
    return entity


def mutate_only(entity: dict[str, Any], options: dict[str, Any]) -> None:
    entity["nested"]["x"] = options["x"]


def explode(entity: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(entity["n"])]


def bad_return(entity: dict[str, Any]) -> int:
    return 1


def crash(entity: dict[str, Any]) -> None:
    raise KeyError("boom")


@cases(
    ("colon path", [{"python": {"function": f"{__name__}:add_one"}}], {"n": 1}, {"n": 2}),
    ("dotted path", [{"python": f"{__name__}.add_one"}], {}, {"n": 1}),
    (
        "mutates a copy",
        [{"python": {"function": f"{__name__}:mutate_only", "options": {"x": "ü"}}}],
        {"nested": {"x": 0}},
        {"nested": {"x": "ü"}},
    ),
    ("fan-out", [{"python": f"{__name__}:explode"}], {"n": 2}, [{"i": 0}, {"i": 1}]),
    ("fan-out empty list", [{"python": f"{__name__}:explode"}], {"n": 0}, []),
    ("bad return", [{"python": f"{__name__}:bad_return"}], {}, Rejected("bad_return returned (1, int)")),
    ("crash", [{"python": f"{__name__}:crash"}], {}, Rejected("step 1 (python): KeyError: 'boom'")),
)
def test_python(steps: list[Any], entity: dict[str, Any], expected: Any) -> None:
    check_case(steps, entity, expected)
