"""``--where EXPR``: select tasks by their entity with the transformer expression language.

The expression is compiled once (:func:`payload_filter`). Comparisons of a path with a literal that are joined by
``and`` at the top (``price > 1000 and category == "toys"``) become SQL (SQLite's JSON functions, PostgreSQL's
``jsonb``) with the same meaning as in Python: a comparison holds only between values of one JSON type, as the
expression language's does, so the database decides them exactly. Whatever else the expression says
(``contains(lower(title), "lamp")``, ``or``, arithmetic) is evaluated in Python on the rows the SQL part lets
through: inside SQLite as a registered function, on PostgreSQL over the candidates in batches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from crossdock.errors import StepConfigError, UsageError
from crossdock.transform.expressions import EvaluationError, Node, compile_expression, parse_expression

#: comparisons SQL decides
_ORDER = frozenset({"<", "<=", ">", ">="})
_EQUAL = frozenset({"==", "!="})
#: the mirror of an operator when the literal is written first (``1000 < price``)
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Segment = str | int


@dataclass(frozen=True, slots=True)
class Condition:
    """``path OP value`` with a JSON literal (string, number, boolean or null)."""

    path: tuple[Segment, ...]
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class PayloadFilter:
    source: str
    #: top-level ``and`` conjuncts SQL decides exactly
    conditions: tuple[Condition, ...]
    #: True when the conditions are the whole expression: no Python check needed
    exact: bool
    _matches: Callable[[Any], Any]

    def matches(self, entity: bytes | str | Any) -> bool:
        """Whether a stored entity (JSON bytes, or already decoded) satisfies the expression; a record the
        expression cannot be evaluated on (a wrong type) does not."""
        if entity is None:
            return False
        if isinstance(entity, bytes | bytearray | memoryview | str):
            try:
                entity = orjson.loads(bytes(entity) if not isinstance(entity, str) else entity)
            except orjson.JSONDecodeError:
                return False
        if not isinstance(entity, dict):
            return False
        try:
            return bool(self._matches(entity))
        except EvaluationError:
            return False


@functools.lru_cache(maxsize=256)
def payload_filter(text: str) -> PayloadFilter:
    """Compile ``text``; a :class:`~crossdock.errors.UsageError` names what is wrong with it."""
    source = text.strip()
    if not source:
        raise UsageError("--where needs an expression, e.g. --where 'price > 1000'")
    try:
        node = parse_expression(source)
        compiled = compile_expression(source, tree=node)
    except StepConfigError as exc:
        raise UsageError(f"--where: {exc.message}") from None
    conjuncts = list(_conjuncts(node))
    conditions = [c for c in (_condition(n) for n in conjuncts) if c is not None]
    return PayloadFilter(source, tuple(conditions), len(conditions) == len(conjuncts), compiled.__call__)


def _conjuncts(node: Node) -> list[Node]:
    if node.kind == "and":
        return [*_conjuncts(node.args[0]), *_conjuncts(node.args[1])]
    return [node]


def _condition(node: Node) -> Condition | None:
    if node.kind != "cmp":
        return None
    op, left, right = node.args
    if op not in _ORDER and op not in _EQUAL:
        return None
    if left.kind == "const" and right.kind == "path":
        op, left, right = _MIRROR[op], right, left
    if left.kind != "path" or right.kind != "const":
        return None
    path: tuple[Segment, ...] = left.args[0]
    value = right.args[0]
    if not all(isinstance(s, int) or _KEY.fullmatch(s) for s in path):
        return None
    if op in _ORDER and (value is None or isinstance(value, bool)):
        return None  # the expression language never orders null or booleans: leave it to Python
    if not isinstance(value, str | int | float | bool) and value is not None:
        return None
    return Condition(path, op, value)


# --- SQL ------------------------------------------------------------------------------------------


def sqlite_conditions(conditions: tuple[Condition, ...]) -> tuple[str, list[Any]]:
    """The conditions as SQLite SQL over the ``entity`` BLOB (JSON text; ``json_type`` keeps types apart)."""
    parts: list[str] = []
    params: list[Any] = []
    for c in conditions:
        json_path = "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in c.path)
        kind = f"json_type(CAST(entity AS TEXT), '{json_path}')"
        value = f"json_extract(CAST(entity AS TEXT), '{json_path}')"
        if c.value is None:
            null = f"COALESCE({kind}, 'null') = 'null'"
            parts.append(null if c.op == "==" else f"NOT ({null})")
            continue
        types = _sqlite_types(c.value)
        same = f"COALESCE({kind} IN ({types}), 0)"
        if c.op in _ORDER:
            parts.append(f"({same} AND {value} {c.op} ?)")
            params.append(_sql_value(c.value))
        else:
            eq = f"({same} AND COALESCE({value} = ?, 0))"
            parts.append(eq if c.op == "==" else f"NOT {eq}")
            params.append(_sql_value(c.value))
    return " AND ".join(parts), params


def _sqlite_types(value: Any) -> str:
    if isinstance(value, str):
        return "'text'"
    # the expression language compares booleans and numbers as numbers (True == 1), as SQLite's json_extract does
    return "'integer', 'real', 'true', 'false'"


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def postgres_conditions(conditions: tuple[Condition, ...]) -> tuple[str, list[Any]]:
    """The conditions as PostgreSQL SQL over the ``entity`` bytea (JSON text), strings compared by code point."""
    parts: list[str] = []
    params: list[Any] = []
    doc = "convert_from(entity, 'UTF8')::jsonb"
    for c in conditions:
        path = "{" + ",".join(str(s) for s in c.path) + "}"
        node = f"({doc} #> '{path}')"
        kind = f"jsonb_typeof{node}"
        if c.value is None:
            null = f"COALESCE({kind}, 'null') = 'null'"
            parts.append(null if c.op == "==" else f"NOT ({null})")
            continue
        if isinstance(c.value, str):
            same = f"COALESCE({kind} = 'string', false)"
            text = f"({doc} #>> '{path}') COLLATE \"C\""
            cmp = "=" if c.op in _EQUAL else c.op
            test = f'({same} AND COALESCE({text} {cmp} %s COLLATE "C", false))'
            params.append(c.value)
        else:
            # CASE, not AND: only CASE promises PostgreSQL will not cast a string first (and fail)
            number = (
                f"(CASE {kind} WHEN 'number' THEN ({node})::numeric "
                f"WHEN 'boolean' THEN (({node})::boolean)::int::numeric END)"
            )
            cmp = "=" if c.op in _EQUAL else c.op
            test = f"COALESCE({number} {cmp} %s, false)"
            params.append(_sql_value(c.value))
        parts.append(f"NOT {test}" if c.op == "!=" else test)
    return " AND ".join(parts), params
