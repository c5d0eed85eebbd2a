"""The expression language: a tokenizer and a Pratt parser compiling text to Python closures, once per route.

Nothing here calls ``eval``: every construct of the grammar maps to a closure written below, so an expression
can only read the entity, do arithmetic and comparisons, and call the whitelisted functions in ``FUNCTIONS``.
A plain path (``a.b.0.c``) compiles straight to a path reader, the fast path.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from crossdock.errors import StepConfigError
from crossdock.transform.paths import MISSING, Segment, compile_getter, format_path

Where = tuple[str | int, ...]
Evaluator = Callable[[Mapping[str, Any]], Any]


class EvaluationError(Exception):
    """An expression could not be evaluated on one record (a wrong type, a division by zero)."""


# --- tokens --------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_$@][A-Za-z0-9_$@]*)
  | (?P<op>//|==|!=|<=|>=|[-+*/%<>()\[\],.{}:])
    """,
    re.VERBOSE,
)
_INDEX_RE = re.compile(r"\d+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
KEYWORDS: Final = frozenset({"and", "or", "not", "in", "matches", "true", "false", "null"})


class Token(NamedTuple):
    kind: str  # number | string | name | op | end
    value: Any
    pos: int


def tokenize(text: str, where: Where = ()) -> list[Token]:
    """Split expression text into tokens; after a '.', digits are a list index, never a float."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if tokens and tokens[-1] == ("op", ".", tokens[-1].pos):
            m_index = _INDEX_RE.match(text, pos)
            if m_index:
                tokens.append(Token("number", int(m_index.group()), pos))
                pos = m_index.end()
                continue
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise StepConfigError(f"invalid expression {text!r}: unexpected {text[pos]!r} at {pos}", where)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "number":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("number", value, pos))
        elif kind == "string":
            body = raw[1:-1]
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), "\\" + e.group(1)), body)
            tokens.append(Token("string", value, pos))
        elif kind == "name":
            tokens.append(Token("name", raw, pos))
        elif kind == "op":
            tokens.append(Token("op", raw, pos))
        pos = m.end()
    tokens.append(Token("end", None, len(text)))
    return tokens


# --- syntax tree ---------------------------------------------------------------------------------


class Node(NamedTuple):
    """One node of the syntax tree; ``kind`` picks the compiler below."""

    kind: str  # const | path | index | call | neg | not | and | or | binop | cmp | list | dict
    args: tuple[Any, ...]


_BINARY_POWER: Final = {
    "or": 10,
    "and": 20,
    "==": 40,
    "!=": 40,
    "<": 40,
    "<=": 40,
    ">": 40,
    ">=": 40,
    "in": 40,
    "not in": 40,
    "matches": 40,
    "+": 50,
    "-": 50,
    "*": 60,
    "/": 60,
    "//": 60,
    "%": 60,
}
_POSTFIX_POWER: Final = 80


class _Parser:
    """A Pratt parser: each token knows how it starts an expression and how it continues one."""

    def __init__(self, text: str, where: Where) -> None:
        self.text = text
        self.where = where
        self.tokens = tokenize(text, where)
        self.i = 0

    def error(self, message: str, token: Token | None = None) -> StepConfigError:
        tok = token or self.tokens[self.i]
        at = "end" if tok.kind == "end" else f"position {tok.pos}"
        return StepConfigError(f"invalid expression {self.text!r}: {message} at {at}", self.where)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.value != op:
            raise self.error(f"expected {op!r}", tok)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty expression")
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek().value!r}")
        return node

    def _binary_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.value in _BINARY_POWER:
            return str(tok.value)
        if tok.kind == "name" and tok.value in ("and", "or", "in", "matches"):
            return str(tok.value)
        if tok.kind == "name" and tok.value == "not":
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "name" and nxt.value == "in":
                return "not in"
        return None

    def expression(self, min_power: int) -> Node:
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in (".", "[", "(") and min_power < _POSTFIX_POWER:
                left = self.postfix(left)
                continue
            op = self._binary_op()
            if op is None:
                return left
            power = _BINARY_POWER[op]
            if power <= min_power:
                return left
            self.take()
            if op == "not in":
                self.take()
            right = self.expression(power)
            if op in ("and", "or"):
                left = Node(op, (left, right))
            elif power == 40:
                left = Node("cmp", (op, left, right))
            else:
                left = Node("binop", (op, left, right))

    def prefix(self) -> Node:
        tok = self.take()
        if tok.kind in ("number", "string"):
            return Node("const", (tok.value,))
        if tok.kind == "name":
            if tok.value == "true":
                return Node("const", (True,))
            if tok.value == "false":
                return Node("const", (False,))
            if tok.value == "null":
                return Node("const", (None,))
            if tok.value == "not":
                return Node("not", (self.expression(30),))
            if tok.value in KEYWORDS:
                raise self.error(f"unexpected keyword {tok.value!r}", tok)
            if self.peek() == ("op", "(", self.peek().pos):
                return self.call(tok)
            return Node("path", ((tok.value,),))
        if tok.kind == "op":
            if tok.value == "(":
                node = self.expression(0)
                self.expect(")")
                return node
            if tok.value == "-":
                return Node("neg", (self.expression(70),))
            if tok.value == "+":
                return self.expression(70)
            if tok.value == "[":
                return Node("list", tuple(self.items("]")))
            if tok.value == "{":
                return self.mapping()
        raise self.error(f"unexpected {tok.value!r}" if tok.kind != "end" else "unexpected end", tok)

    def items(self, closing: str) -> list[Node]:
        out: list[Node] = []
        while not (self.peek().kind == "op" and self.peek().value == closing):
            out.append(self.expression(0))
            if self.peek().kind == "op" and self.peek().value == ",":
                self.take()
            elif not (self.peek().kind == "op" and self.peek().value == closing):
                raise self.error(f"expected ',' or {closing!r}")
        self.take()
        return out

    def mapping(self) -> Node:
        pairs: list[tuple[Node, Node]] = []
        while not (self.peek().kind == "op" and self.peek().value == "}"):
            key_tok = self.take()
            if key_tok.kind not in ("string", "name"):
                raise self.error("a mapping key must be a name or a string", key_tok)
            self.expect(":")
            pairs.append((Node("const", (key_tok.value,)), self.expression(0)))
            if self.peek().kind == "op" and self.peek().value == ",":
                self.take()
            elif not (self.peek().kind == "op" and self.peek().value == "}"):
                raise self.error("expected ',' or '}'")
        self.take()
        return Node("dict", tuple(pairs))

    def call(self, name_tok: Token) -> Node:
        name = str(name_tok.value)
        if name not in FUNCTIONS and name != "exists":
            raise self.error(f"unknown function {name}()", name_tok)
        self.take()  # (
        args = self.items(")")
        if name == "exists":
            if len(args) != 1 or args[0].kind != "path":
                raise self.error("exists() takes one path", name_tok)
            return Node("exists", args[0].args)
        spec = FUNCTIONS[name]
        if not spec.min_args <= len(args) <= spec.max_args:
            raise self.error(f"{name}() takes {spec.arity_text()}, got {len(args)}", name_tok)
        return Node("call", (name, tuple(args)))

    def postfix(self, left: Node) -> Node:
        tok = self.take()
        if tok.value == "(":
            raise self.error("only named functions can be called", tok)
        if tok.value == ".":
            seg_tok = self.take()
            if seg_tok.kind == "name" or (seg_tok.kind == "number" and isinstance(seg_tok.value, int)):
                return _extend_path(left, seg_tok.value)
            raise self.error("expected a key after '.'", seg_tok)
        index = self.expression(0)
        self.expect("]")
        if index.kind == "const" and isinstance(index.args[0], str | int) and not isinstance(index.args[0], bool):
            return _extend_path(left, index.args[0])
        return Node("index", (left, index))


def _extend_path(left: Node, seg: Segment) -> Node:
    if left.kind == "path":
        return Node("path", ((*left.args[0], seg),))
    return Node("index", (left, Node("const", (seg,))))


# --- functions -----------------------------------------------------------------------------------


def _type_text(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _need_str(fname: str, value: Any) -> str:
    if not isinstance(value, str):
        raise EvaluationError(f"{fname}() expects a string, got {_type_text(value)}")
    return value


def to_text(value: Any) -> str:
    """How a value reads inside a string: null is empty, booleans are lower case, containers are JSON."""
    if isinstance(value, str):
        return value
    if value is None or value is MISSING:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _fn_int(value: Any) -> Any:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            value = value.strip()
            return int(value) if _INT_TEXT.fullmatch(value) else int(float(value))
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise EvaluationError(f"int() cannot convert {_type_text(value)}") from None


_INT_TEXT = re.compile(r"[+-]?\d+")


def _fn_float(value: Any) -> Any:
    if value is None:
        return None
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise EvaluationError(f"float() cannot convert {_type_text(value)}") from None
    if not math.isfinite(result):
        raise EvaluationError(f"float() cannot convert {_type_text(value)}")
    return result


def _fn_round(value: Any, digits: Any = 0) -> Any:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not isinstance(digits, int):
        raise EvaluationError(f"round() expects a number, got {_type_text(value)}")
    return round(value, digits)


def _fn_len(value: Any) -> Any:
    if value is None:
        return 0
    if isinstance(value, str | list | dict):
        return len(value)
    raise EvaluationError(f"len() expects a string, list or object, got {_type_text(value)}")


def _fn_str(value: Any) -> Any:
    return None if value is None else to_text(value)


def _str_op(fname: str, fn: Callable[[str], str]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        return None if value is None else fn(_need_str(fname, value))

    return apply


def _fn_join(values: Any, sep: Any = "") -> Any:
    if values is None:
        return None
    if not isinstance(values, list):
        raise EvaluationError(f"join() expects a list, got {_type_text(values)}")
    return to_text(sep).join(to_text(v) for v in values)


def _fn_split(value: Any, sep: Any = None) -> Any:
    if value is None:
        return None
    return _need_str("split", value).split(sep if sep else None)


def _fn_replace(value: Any, old: Any, new: Any) -> Any:
    if value is None:
        return None
    return _need_str("replace", value).replace(to_text(old), to_text(new))


def _fn_abs(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise EvaluationError(f"abs() expects a number, got {_type_text(value)}")
    return abs(value)


def _fn_minmax(fname: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        values = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        values = [v for v in values if v is not None]
        if not values:
            return None
        try:
            return pick(values)
        except TypeError:
            raise EvaluationError(f"{fname}() cannot compare {values!r}") from None

    return apply


def _fn_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FunctionSpec(NamedTuple):
    fn: Callable[..., Any]
    min_args: int
    max_args: int
    pure: bool = True  # False: never folded into a constant at compile time

    def arity_text(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.min_args} argument(s)"
        if self.max_args > 99:
            return f"at least {self.min_args} argument(s)"
        return f"{self.min_args} to {self.max_args} arguments"


MANY: Final = 1000
#: the whitelist: the only functions an expression can call
FUNCTIONS: dict[str, FunctionSpec] = {
    "upper": FunctionSpec(_str_op("upper", str.upper), 1, 1),
    "lower": FunctionSpec(_str_op("lower", str.lower), 1, 1),
    "trim": FunctionSpec(_str_op("trim", str.strip), 1, 1),
    "title": FunctionSpec(_str_op("title", str.title), 1, 1),
    "len": FunctionSpec(_fn_len, 1, 1),
    "str": FunctionSpec(_fn_str, 1, 1),
    "int": FunctionSpec(_fn_int, 1, 1),
    "float": FunctionSpec(_fn_float, 1, 1),
    "round": FunctionSpec(_fn_round, 1, 2),
    "abs": FunctionSpec(_fn_abs, 1, 1),
    "min": FunctionSpec(_fn_minmax("min", min), 1, MANY),
    "max": FunctionSpec(_fn_minmax("max", max), 1, MANY),
    "concat": FunctionSpec(lambda *xs: "".join(to_text(x) for x in xs), 1, MANY),
    "coalesce": FunctionSpec(lambda *xs: next((x for x in xs if x is not None and x != ""), None), 1, MANY),
    "join": FunctionSpec(_fn_join, 1, 2),
    "split": FunctionSpec(_fn_split, 1, 2),
    "replace": FunctionSpec(_fn_replace, 3, 3),
    "now": FunctionSpec(_fn_now, 0, 0, pure=False),
    # written as the functions people reach for in a search box (--where); `needle in haystack` says the same
    "contains": FunctionSpec(lambda haystack, needle: _contains(needle, haystack), 2, 2),
    "startswith": FunctionSpec(
        lambda s, prefix: isinstance(s, str) and isinstance(prefix, str) and s.startswith(prefix), 2, 2
    ),
    "endswith": FunctionSpec(
        lambda s, suffix: isinstance(s, str) and isinstance(suffix, str) and s.endswith(suffix), 2, 2
    ),
}


# --- compiling the tree to closures --------------------------------------------------------------


def _path_reader(segments: tuple[Segment, ...]) -> Evaluator:
    """The fast path: a plain path reads the entity directly; absent values read as None."""
    if len(segments) == 1 and isinstance(segments[0], str):
        key = segments[0]

        def read1(entity: Mapping[str, Any]) -> Any:
            return entity.get(key)

        return read1
    getter = compile_getter(segments)

    def read(entity: Mapping[str, Any]) -> Any:
        value = getter(entity)
        return None if value is MISSING else value

    return read


def _arith(op: str) -> Callable[[Any, Any], Any]:
    fn: Callable[[Any, Any], Any] = {
        "+": operator.add,
        "-": operator.sub,
        "*": operator.mul,
        "/": operator.truediv,
        "//": operator.floordiv,
        "%": operator.mod,
    }[op]

    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if isinstance(a, str) != isinstance(b, str) or isinstance(a, bool) or isinstance(b, bool):
            raise EvaluationError(f"cannot compute {_type_text(a)} {op} {_type_text(b)}")
        try:
            return fn(a, b)
        except ZeroDivisionError:
            raise EvaluationError(f"division by zero in {a!r} {op} {b!r}") from None
        except TypeError:
            raise EvaluationError(f"cannot compute {_type_text(a)} {op} {_type_text(b)}") from None

    return apply


def _ordering(op: str) -> Callable[[Any, Any], bool]:
    fn: Callable[[Any, Any], Any] = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]

    def apply(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        try:
            return bool(fn(a, b))
        except TypeError:
            return False

    return apply


def _contains(a: Any, b: Any) -> bool:
    if b is None:
        return False
    if isinstance(b, str) and not isinstance(a, str):
        return False
    try:
        return a in b
    except TypeError:
        return False


def _matches(a: Any, pattern: Any) -> bool:
    if not isinstance(a, str) or not isinstance(pattern, str):
        return False
    try:
        return re.search(pattern, a) is not None
    except re.error as exc:
        raise EvaluationError(f"invalid regular expression {pattern!r}: {exc}") from None


class _Compiler:
    def __init__(self, text: str, where: Where) -> None:
        self.text = text
        self.where = where

    def compile(self, node: Node) -> Evaluator:
        fn, _const = self._compile(node)
        return fn

    def _compile(self, node: Node) -> tuple[Evaluator, bool]:
        """Return (closure, is_constant); constant sub-trees are folded at compile time."""
        kind, args = node
        if kind == "const":
            value = args[0]
            return (lambda _e: value), True
        if kind == "path":
            return _path_reader(args[0]), False
        if kind == "exists":
            getter = compile_getter(args[0])
            return (lambda e: getter(e) is not MISSING), False
        if kind == "index":
            base, _ = self._compile(args[0])
            index, _ = self._compile(args[1])

            def read_index(e: Mapping[str, Any]) -> Any:
                from crossdock.transform.paths import step_into

                key = index(e)
                if isinstance(key, bool) or not isinstance(key, str | int):
                    return None
                value = step_into(base(e), key)
                return None if value is MISSING else value

            return read_index, False
        if kind == "list":
            parts = [self._compile(n) for n in args]
            fns = [p[0] for p in parts]
            return self._fold(lambda e: [f(e) for f in fns], all(p[1] for p in parts))
        if kind == "dict":
            pairs = [(str(k.args[0]), self._compile(v)) for k, v in args]
            return self._fold(lambda e: {k: v[0](e) for k, v in pairs}, all(v[1] for _, v in pairs))
        if kind == "not":
            inner, const = self._compile(args[0])
            return self._fold(lambda e: not inner(e), const)
        if kind == "neg":
            inner, const = self._compile(args[0])
            sub = _arith("-")
            return self._fold(lambda e: sub(0, inner(e)), const)
        if kind == "and":
            (left, lc), (right, rc) = self._compile(args[0]), self._compile(args[1])
            return self._fold(lambda e: left(e) and right(e), lc and rc)
        if kind == "or":
            (left, lc), (right, rc) = self._compile(args[0]), self._compile(args[1])
            return self._fold(lambda e: left(e) or right(e), lc and rc)
        if kind == "binop":
            op, ln, rn = args
            (left, lc), (right, rc) = self._compile(ln), self._compile(rn)
            fn = _arith(op)
            return self._fold(lambda e: fn(left(e), right(e)), lc and rc)
        if kind == "cmp":
            return self._compile_cmp(*args)
        if kind == "call":
            name, arg_nodes = args
            spec = FUNCTIONS[name]
            parts = [self._compile(n) for n in arg_nodes]
            fns = [p[0] for p in parts]
            call = spec.fn
            if len(fns) == 1:
                only = fns[0]
                return self._fold(lambda e: call(only(e)), spec.pure and parts[0][1])
            return self._fold(lambda e: call(*[f(e) for f in fns]), spec.pure and all(p[1] for p in parts))
        raise AssertionError(kind)  # pragma: no cover - the parser makes no other kinds

    def _fold(self, fn: Evaluator, const: bool) -> tuple[Evaluator, bool]:
        if not const:
            return fn, False
        try:
            value = fn({})
        except EvaluationError as exc:
            raise StepConfigError(f"invalid expression {self.text!r}: {exc}", self.where) from None
        return (lambda _e: value), True

    def _compile_cmp(self, op: str, ln: Node, rn: Node) -> tuple[Evaluator, bool]:
        (left, lc), (right, rc) = self._compile(ln), self._compile(rn)
        if op == "matches":
            if rn.kind == "const":
                pattern = rn.args[0]
                if not isinstance(pattern, str):
                    raise StepConfigError(f"invalid expression {self.text!r}: matches needs a string", self.where)
                try:
                    regex = re.compile(pattern)
                except re.error as exc:
                    raise StepConfigError(
                        f"invalid expression {self.text!r}: bad regular expression {pattern!r}: {exc}",
                        self.where,
                    ) from None
                search = regex.search
                return self._fold(lambda e: isinstance(v := left(e), str) and search(v) is not None, lc)
            return self._fold(lambda e: _matches(left(e), right(e)), lc and rc)
        if op in ("in", "not in"):
            if rn.kind == "list" and rc:
                values = right({})
                try:
                    members: Any = frozenset(values)
                except TypeError:
                    members = values

                def contains_const(e: Mapping[str, Any]) -> bool:
                    try:
                        return left(e) in members
                    except TypeError:
                        return False

                test: Evaluator = contains_const
            else:

                def contains(e: Mapping[str, Any]) -> bool:
                    return _contains(left(e), right(e))

                test = contains
            if op == "not in":
                positive = test
                return self._fold(lambda e: not positive(e), lc and rc)
            return self._fold(test, lc and rc)
        if op == "==":
            return self._fold(lambda e: left(e) == right(e), lc and rc)
        if op == "!=":
            return self._fold(lambda e: left(e) != right(e), lc and rc)
        cmp = _ordering(op)
        if rc:
            const_right = right({})
            return self._fold(lambda e: cmp(left(e), const_right), lc)
        return self._fold(lambda e: cmp(left(e), right(e)), lc and rc)


# --- public API ----------------------------------------------------------------------------------


class Expression:
    """A compiled expression: call it with an entity. ``path`` is set when the text is a plain path."""

    __slots__ = ("__call__", "constant", "is_constant", "path", "source")

    def __init__(
        self,
        source: str,
        fn: Evaluator,
        *,
        path: tuple[Segment, ...] | None = None,
        is_constant: bool = False,
    ) -> None:
        self.source = source
        #: the closure itself: an instance attribute, so a call skips one level of dispatch
        self.__call__: Evaluator = fn
        self.path = path
        self.is_constant = is_constant
        self.constant: Any = fn({}) if is_constant else None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def parse_expression(text: str, *, path: Where = ()) -> Node:
    """The syntax tree of ``text`` (a leading '=' allowed), for callers that read its shape (``--where`` turns
    comparisons into SQL). Raises StepConfigError for any syntax error."""
    if not isinstance(text, str):
        raise StepConfigError(f"an expression must be a string, got {text!r}", path)
    return _Parser(text[1:] if text.startswith("=") else text, path).parse()


def compile_expression(text: str, *, path: Where = (), tree: Node | None = None) -> Expression:
    """Compile once; a leading '=' is allowed. Raises StepConfigError (with ``path``) for any syntax error. ``tree``
    is ``text`` already parsed (:func:`parse_expression`)."""
    node = tree if tree is not None else parse_expression(text, path=path)
    source = text[1:] if text.startswith("=") else text
    compiler = _Compiler(source, path)
    fn, const = compiler._compile(node)
    if node.kind == "path":
        return Expression(source, fn, path=node.args[0])
    return Expression(source, fn, is_constant=const)


def call_expression(expr: Expression, entity: Mapping[str, Any]) -> Any:
    """Evaluate ``expr``; typed so mypy sees the result."""
    return expr.__call__(entity)


def compile_value(value: Any, *, path: Where = ()) -> Evaluator:
    """A step option that is a literal, or an expression when it is a string starting with '='."""
    if isinstance(value, str) and value.startswith("="):
        return compile_expression(value, path=path).__call__
    return lambda _e: value


def compile_template(text: str, *, path: Where = ()) -> Evaluator:
    """``"https://shop/{sku}"``: each ``{expression}`` is compiled once; ``{{`` and ``}}`` are braces."""
    if not isinstance(text, str):
        raise StepConfigError(f"a template must be a string, got {text!r}", path)
    parts: list[str | Evaluator] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "{":
            end = _closing_brace(text, i + 1, path)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(compile_expression(text[i + 1 : end], path=path).__call__)
            i = end + 1
        elif ch == "}":
            raise StepConfigError(f"invalid template {text!r}: single '}}' at {i} (write '}}}}')", path)
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    if all(isinstance(p, str) for p in parts):
        constant = "".join(p for p in parts if isinstance(p, str))
        return lambda _e: constant
    fmt = "".join(p.replace("%", "%%") if isinstance(p, str) else "%s" for p in parts)
    getters = [p for p in parts if not isinstance(p, str)]
    if len(getters) == 1:
        only = getters[0]

        def render1(e: Mapping[str, Any]) -> str:
            v = only(e)
            return fmt % (v if type(v) is str else to_text(v))

        return render1
    return lambda e: fmt % tuple([to_text(g(e)) for g in getters])


def _closing_brace(text: str, start: int, path: Where) -> int:
    quote: str | None = None
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise StepConfigError(f"invalid template {text!r}: '{{' at {start - 1} is never closed", path)


_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compile_identifier(spec: str | Sequence[str]) -> Callable[[Mapping[str, Any]], str | None]:
    """The route's key: one expression or several (``"[store, sku]"``) joined by ':'; None if one is empty."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("[") and text.endswith("]"):
            parser = _Parser(text, ())
            node = parser.parse()
            if node.kind != "list" or not node.args:
                raise StepConfigError(f"invalid identifier {spec!r}")
            compiler = _Compiler(text, ())
            getters = [compiler.compile(n) for n in node.args]
        else:
            getters = [compile_expression(text).__call__]
    elif isinstance(spec, Sequence) and spec:
        getters = [compile_expression(str(part), path=(i,)).__call__ for i, part in enumerate(spec)]
    else:
        raise StepConfigError(f"invalid identifier {spec!r}")

    def part_text(value: Any) -> str | None:
        if value is None or value == "" or isinstance(value, dict | list):
            return None
        return to_text(value)

    if isinstance(spec, str) and _PLAIN_KEY.fullmatch(spec.strip()):
        key = spec.strip()

        def plain(entity: Mapping[str, Any]) -> str | None:
            # the common case (``identifier: sku``): one dict lookup, strings pass straight through
            value = entity.get(key)
            if type(value) is str:
                return value or None
            return part_text(value)

        return plain

    if len(getters) == 1:
        only = getters[0]

        def single(entity: Mapping[str, Any]) -> str | None:
            return part_text(only(entity))

        return single

    def composite(entity: Mapping[str, Any]) -> str | None:
        texts = []
        for g in getters:
            t = part_text(g(entity))
            if t is None:
                return None
            texts.append(t)
        return ":".join(texts)

    return composite


# --- structured conditions (for YAML users who prefer keys to expressions) ----------------------

_COMPARISONS: Final = {"equals": "==", "not_equals": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def compile_condition(spec: Any, *, path: Where = ()) -> Evaluator:
    """A condition: an expression, a boolean, or a one-key mapping (all, any, not, exists, equals, ...)."""
    if isinstance(spec, bool):
        return lambda _e: spec
    if isinstance(spec, str):
        return compile_expression(spec, path=path).__call__
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise StepConfigError(f"a condition is an expression or a one-key mapping, got {spec!r}", path)
    ((key, arg),) = spec.items()
    here = (*path, key)
    if key in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            raise StepConfigError(f"{key} needs a non-empty list of conditions", here)
        parts = [compile_condition(c, path=(*here, i)) for i, c in enumerate(arg)]
        if key == "all":
            return lambda e: all(p(e) for p in parts)
        return lambda e: any(p(e) for p in parts)
    if key == "not":
        inner = compile_condition(arg, path=here)
        return lambda e: not inner(e)
    if key == "exists":
        if not isinstance(arg, str):
            raise StepConfigError("exists needs a path", here)
        return compile_expression(f"exists({arg})", path=here).__call__
    if not isinstance(arg, Mapping) or "path" not in arg:
        raise StepConfigError(f"{key} needs a mapping with 'path'", here)
    read = compile_expression(str(arg["path"]), path=(*here, "path")).__call__
    if key == "one_of":
        values = arg.get("values")
        if not isinstance(values, list):
            raise StepConfigError("one_of needs 'values: [...]'", (*here, "values"))
        return lambda e: read(e) in values
    if key == "matches":
        try:
            regex = re.compile(str(arg.get("pattern")))
        except re.error as exc:
            raise StepConfigError(f"bad regular expression: {exc}", (*here, "pattern")) from None
        return lambda e: isinstance(v := read(e), str) and regex.search(v) is not None
    if key in _COMPARISONS:
        if "value" not in arg:
            raise StepConfigError(f"{key} needs 'value'", here)
        other = compile_value(arg["value"], path=(*here, "value"))
        op = _COMPARISONS[key]
        if op == "==":
            return lambda e: read(e) == other(e)
        if op == "!=":
            return lambda e: read(e) != other(e)
        cmp = _ordering(op)
        return lambda e: cmp(read(e), other(e))
    known = ", ".join(["all", "any", "not", "exists", "one_of", "matches", *_COMPARISONS])
    raise StepConfigError(f"unknown condition {key!r} (known: {known})", here)


def describe_path(segments: tuple[Segment, ...]) -> str:
    """Re-exported for steps' messages."""
    return format_path(segments)
