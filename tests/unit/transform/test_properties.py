"""Properties: XML round-trips, rename is reversible, filter never raises, apply never mutates its input."""

from __future__ import annotations

import contextlib
import copy
import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crossdock.errors import RecordFiltered, RecordRejected, StepConfigError
from crossdock.transform import compile_steps
from crossdock.transform.steps.xmljson import json_to_xml, xml_to_json

# --- XML -----------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,6}", fullmatch=True).filter(
    lambda n: not n.lower().startswith("xml")
)
# XML 1.0 characters only; \r is excluded because every parser turns it into \n
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=8)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    elem = ET.Element(draw(names))
    for key, value in draw(st.dictionaries(names, xml_text, max_size=3)).items():
        elem.set(key, value)
    children = draw(st.lists(elements(depth + 1), max_size=3)) if depth < 3 else []
    elem.extend(children)
    text = draw(st.none() | xml_text)
    if children and text is not None and not text.strip():
        text = None  # indentation between children is not data
    elem.text = text
    return elem


def canonical(elem: ET.Element) -> Any:
    """Tag, attributes, text and children grouped by tag (the order between different tags is not data)."""
    children = list(elem)
    text = elem.text or None
    if children and text is not None and not text.strip():
        text = None
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(child.tag, []).append(canonical(child))
    return (elem.tag, sorted(elem.attrib.items()), text, list(groups.items()))


@settings(max_examples=300)
@given(elements())
def test_xml_to_json_to_xml_round_trips(root: ET.Element) -> None:
    text = ET.tostring(root, encoding="unicode")
    data = xml_to_json(text)
    again = json_to_xml(data)
    assert canonical(ET.fromstring(again)) == canonical(ET.fromstring(text))
    assert xml_to_json(again) == data


@given(elements())
def test_xml_steps_round_trip_inside_a_pipeline(root: ET.Element) -> None:
    text = ET.tostring(root, encoding="unicode")
    pipeline = compile_steps([{"xml_to_json": {"path": "x"}}, {"json_to_xml": {"path": "x"}}])
    (out,) = pipeline.apply({"x": text})
    assert canonical(ET.fromstring(out["x"])) == canonical(ET.fromstring(text))


# --- rename --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
keys = st.text(min_size=1, max_size=6)


@given(st.dictionaries(keys, json_values, max_size=6), json_values, st.sampled_from(["a", "ä b", "x.y"]))
def test_rename_then_rename_back_is_identity(entity: dict[str, Any], value: Any, nested: str) -> None:
    entity = {k: v for k, v in entity.items() if k not in ("src", "dst", "p")}
    entity["src"] = value
    entity["p"] = {"src": value, "keep": 1}
    there = compile_steps([{"rename": {"from": "src", "to": "dst"}}, {"rename": {"from": "p.src", "to": "p.dst"}}])
    back = compile_steps([{"rename": {"from": "dst", "to": "src"}}, {"rename": {"from": "p.dst", "to": "p.src"}}])
    (moved,) = there.apply(entity)
    assert "src" not in moved and moved["dst"] == value
    assert back.apply(moved) == [entity]


@given(
    st.dictionaries(keys.filter(lambda k: not k.startswith(("attr_", "x_"))), json_values, max_size=4),
    st.dictionaries(st.text(max_size=5), json_values, max_size=4),
)
def test_wildcard_rename_then_back_is_identity(others: dict[str, Any], attrs: dict[str, Any]) -> None:
    entity = {**others, **{f"attr_{k}": v for k, v in attrs.items()}}
    there = compile_steps([{"rename": {"from": "attr_*", "to": "x_$1"}}])
    back = compile_steps([{"rename": {"from": "x_*", "to": "attr_$1"}}])
    (moved,) = there.apply(entity)
    assert not any(k.startswith("attr_") for k in moved)
    assert back.apply(moved) == [entity]


# --- filter --------------------------------------------------------------------------------------

atoms = st.sampled_from(["a", "b", "a.b", "a[0]", "c.d.e", "1", "0", "2.5", "'x'", "''", "null", "true", "[1, 'a']"])
functions = st.sampled_from(["upper", "lower", "trim", "len", "int", "float", "str", "abs", "round"])


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(
                inner,
                st.sampled_from(
                    [
                        "+",
                        "-",
                        "*",
                        "/",
                        "//",
                        "%",
                        "==",
                        "!=",
                        "<",
                        ">=",
                        "and",
                        "or",
                        "in",
                        "not in",
                        "matches",
                    ]
                ),
                inner,
            ).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(functions, inner).map(lambda t: f"{t[0]}({t[1]})"),
            inner.map(lambda e: f"not {e}"),
            inner.map(lambda e: "exists(a.b)"),
        ),
        max_leaves=6,
    )


entities = st.fixed_dictionaries({}, optional={"a": json_values, "b": json_values, "c": json_values})


@settings(max_examples=400)
@given(expressions(), entities)
def test_filter_never_raises(condition: str, entity: dict[str, Any]) -> None:
    try:
        pipeline = compile_steps([{"filter": condition}])
    except StepConfigError:
        return  # a constant sub-expression that cannot be evaluated fails at compile time, as it should
    before = copy.deepcopy(entity)
    try:
        assert pipeline.apply(entity) == [entity]
    except RecordFiltered as exc:
        assert exc.message.startswith(f"filter: {condition}")
    assert entity == before


@given(entities)
def test_apply_never_mutates_its_input(entity: dict[str, Any]) -> None:
    pipeline = compile_steps(
        [
            {"set": {"path": "a.b.c", "value": 1}},
            {"remove": ["b.*", "c.0"]},
            {"copy": {"from": "c", "to": "d.e"}},
            {"defaults": {"c.x": "=a"}},
            {"merge": {"path": "b", "value": {"z": [1]}}},
        ]
    )
    before = copy.deepcopy(entity)
    # merging into a non-object is a rejection; the input still must not change
    with contextlib.suppress(RecordRejected):
        pipeline.apply(entity)
    assert entity == before
