"""The pure parts of edit and replay: --set values, paths, the diff, masked values."""

from __future__ import annotations

import pytest

from crossdock.engine.task_edit import DIFF_LIMIT, apply_changes, entity_diff, parse_set, restore_masked
from crossdock.errors import UsageError
from crossdock.redact import Redactor


def plain(text: str) -> str:
    return text


def test_set_values_are_json_and_a_bare_word_is_explained() -> None:
    assert parse_set('category="lamps"') == ("category", "lamps")
    assert parse_set("price=12.5") == ("price", 12.5)
    assert parse_set('items[0].tags=["a"]') == ("items[0].tags", ["a"])
    assert parse_set('a="b=c"') == ("a", "b=c")
    with pytest.raises(UsageError, match=r"""is not JSON.*--set 'category="lamps"'"""):
        parse_set("category=lamps")
    with pytest.raises(UsageError, match="write PATH=JSON"):
        parse_set("category")


def test_apply_changes_copies_and_names_what_does_not_apply() -> None:
    entity = {"sku": "A", "items": [{"sku": "x"}], "meta": {"a": 1}}
    edited = apply_changes(entity, [("items[0].sku", "y"), ("meta.b", 2)], ["meta.a"])
    assert edited == {"sku": "A", "items": [{"sku": "y"}], "meta": {"b": 2}}
    assert entity == {"sku": "A", "items": [{"sku": "x"}], "meta": {"a": 1}}, "the original is left alone"
    with pytest.raises(UsageError, match="--unset nope: the entity has nothing at nope"):
        apply_changes(entity, [], ["nope"])
    with pytest.raises(UsageError, match=r"^set items\[5\]\.sku: .*list index"):
        apply_changes(entity, [("items[5].sku", 1)], labels=("set", "unset"))
    with pytest.raises(UsageError, match=r"--set a\.\.b: invalid path"):
        apply_changes(entity, [("a..b", 1)])
    with pytest.raises(UsageError, match="no entity object"):
        apply_changes(None, [("a", 1)])


def test_the_diff_lists_changed_paths_with_json_values() -> None:
    old = {"a": 1, "b": {"c": [1, 2, 3]}, "d": True, "gone": "x"}
    new = {"a": 1.0, "b": {"c": [1, 5]}, "d": 1, "added": None}
    assert entity_diff(old, new, plain) == [
        {"path": "a", "old": "1", "new": "1.0"},
        {"path": "b.c[1]", "old": "2", "new": "5"},
        {"path": "b.c[2]", "old": "3", "new": None},
        {"path": "d", "old": "true", "new": "1"},
        {"path": "gone", "old": '"x"', "new": None},
        {"path": "added", "old": None, "new": "null"},
    ]
    assert entity_diff(old, old, plain) == []
    many = entity_diff({}, {f"k{i}": i for i in range(DIFF_LIMIT + 5)}, plain)
    assert len(many) == DIFF_LIMIT + 1 and many[-1]["new"] == "5 more changed paths"
    long = entity_diff({"t": ""}, {"t": "x" * 500}, plain)
    assert len(long[0]["new"]) == 200 and long[0]["new"].endswith("…")


def test_the_diff_is_redacted_and_masked_values_sent_back_keep_their_stored_value() -> None:
    redact = Redactor(["s3cr3t-value"])
    stored = {"note": "token s3cr3t-value", "list": ["s3cr3t-value", "b"], "price": 1}
    shown = {"note": redact(stored["note"]), "list": [redact("s3cr3t-value"), "b"], "price": 2}
    assert shown["note"] == "token ***"
    assert restore_masked(stored, shown, redact) == {**stored, "price": 2}
    assert entity_diff({"k": "old"}, {"k": "new s3cr3t-value"}, redact) == [
        {"path": "k", "old": '"old"', "new": '"new ***"'}
    ]
