"""``where``: tasks selected by their entity, on every backend, exactly as the expression language decides it:
what SQL decides (comparisons of a path with a literal) and what Python decides (everything else) agree with a
full scan in Python, for listing, paging, counting and bulk actions."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from store_helpers import ROUTE, T0, claim, settle

from crossdock.errors import UsageError
from crossdock.store.base import ImportItem, ImportOptions, Store, TaskFilter
from crossdock.store.payload_filter import payload_filter
from crossdock.tasks import Action, Status

ENTITIES: list[dict[str, Any]] = [
    {"sku": "A", "price": 1500, "category": "toys", "title": "Big Lamp", "attributes": {"color": "red"}},
    {"sku": "B", "price": 999.5, "category": "toys", "title": "lampshade", "tags": ["a", "b"]},
    {"sku": "C", "price": "2000", "category": "books", "title": "Lamps of the world"},  # a price written as text
    {"sku": "D", "price": 1001, "category": "garden", "flag": True, "note": None},
    {"sku": "E", "category": "toys", "title": "Kite", "flag": False, "tags": ["b"]},  # no price at all
    {"sku": "F", "price": 5, "category": "Toys", "title": "ÉLAN lamp", "attributes": {"color": "blue"}},
    {"sku": "G", "price": 1000, "category": "toys", "title": "Zebra", "flag": 1},
]

EXPRESSIONS = [
    "price > 1000",
    "1000 < price",
    "price >= 1000 and category == 'toys'",
    'contains(lower(title), "lamp")',
    "price > 1000 and contains(lower(title), 'lamp')",
    "price != 5",
    "price == 1000",
    "tags[0] == 'a'",
    "attributes.color == 'red'",
    "flag == true",
    "flag != false",
    "title < 'M'",
    "title >= 'Lamps'",
    "price >= 1000 or category == 'books'",
    "note == null",
    "note != null",
    "price < 1e9 and price > 'a'",
]


def load(store: Store) -> dict[str, int]:
    items = [
        ImportItem(Status.NEW, e["sku"], orjson.dumps(e), hashlib.sha256(orjson.dumps(e)).digest()[:16])
        for e in ENTITIES
    ]
    store.import_batch(ROUTE, items, run_id=None, options=ImportOptions(), now=T0)
    store.import_batch("other", items[:2], run_id=None, options=ImportOptions(), now=T0)
    return {t.identifier or "": t.id for t in store.list_tasks(TaskFilter(route=ROUTE), limit=100)[0]}


def expected(expression: str) -> set[str]:
    found = payload_filter(expression)
    return {e["sku"] for e in ENTITIES if found.matches(orjson.dumps(e))}


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_where_lists_and_counts_what_a_full_scan_in_python_finds(store: Store, expression: str) -> None:
    load(store)
    selection = TaskFilter(route=ROUTE, where=expression)
    listed, cursor = store.list_tasks(selection, limit=100)
    assert cursor is None
    assert {t.identifier for t in listed} == expected(expression), expression
    assert store.count_tasks(selection) == len(expected(expression))


def test_the_oracle_is_not_trivial() -> None:
    assert expected("price > 1000") == {"A", "D"}  # "2000" is text: not greater than a number
    assert expected("price != 5") == {"A", "B", "C", "D", "E", "G"}  # a missing price is not 5
    assert expected("flag == true") == {"D", "G"}  # 1 == true, as in Python
    assert expected("title < 'M'") == {"A", "C", "E"}  # by code point: "lampshade" and "ÉLAN" sort after "M"
    assert payload_filter("price > 1000").exact and not payload_filter("contains(title, 'x')").exact


def test_where_pages_newest_first_and_combines_with_other_filters(store: Store) -> None:
    ids = load(store)
    selection = TaskFilter(route=ROUTE, where="contains(lower(title), 'lamp') or price == 1000")
    first, cursor = store.list_tasks(selection, limit=2)
    assert [t.identifier for t in first] == ["G", "F"] and cursor == ids["F"]
    rest, cursor = store.list_tasks(selection, limit=2, cursor=cursor)
    assert [t.identifier for t in rest] == ["C", "B"]
    last, cursor = store.list_tasks(selection, limit=2, cursor=cursor)
    assert [t.identifier for t in last] == ["A"] and cursor is None
    both = TaskFilter(where="price > 1000", statuses=[Status.NEW], identifier="A", route=ROUTE)
    assert [t.identifier for t in store.list_tasks(both)[0]] == ["A"]
    assert store.count_tasks(TaskFilter(where="category == 'toys'")) == 4 + 2  # both routes


def test_a_bulk_action_with_where_acts_on_exactly_the_matching_tasks(store: Store) -> None:
    load(store)
    for t in claim(store, 100):
        settle(store, t.id, Action.DELIVERY_FAILED, error="HTTP 422")
    result = store.apply_action(
        Action.RETRY, TaskFilter(route=ROUTE, where="contains(lower(title), 'lamp')"), actor="anna", reason=None, now=T0
    )
    assert (result.matched, result.changed) == (4, 4)
    retried = {t.identifier for t in store.list_tasks(TaskFilter(route=ROUTE, statuses=[Status.NEW]))[0]}
    assert retried == {"A", "B", "C", "F"}
    [audit] = [a for a in store.list_audit() if a.action == "tasks.bulk_retry"]
    assert audit.target == {"filter": {"route": ROUTE, "where": "contains(lower(title), 'lamp')"}}


@pytest.mark.parametrize("bad", ["price >", "", "price > > 3", "lower(title"])
def test_an_expression_that_does_not_parse_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        payload_filter(bad)
    assert "--where" in info.value.message
