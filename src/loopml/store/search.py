"""Run search: the filter and order_by language of ``loopml.runs``.

::

    loopml.runs(filter="metrics.val_acc > 0.9 and params.lr = '0.01'",
                order_by=["metrics.val_acc DESC"])

loopml tokenizes and parses filters itself (no ``eval``, no SQL text built
from user strings) and compiles them to SQLAlchemy Core with bound
parameters, so that a filter means the same on SQLite and PostgreSQL.

Grammar (keywords are case-insensitive)::

    filter     := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | "(" or_expr ")" | comparison
    comparison := field op value
                | field ["NOT"] "IN" "(" value ("," value)* ")"
                | field "IS" ["NOT"] "NULL"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "LIKE" | "ILIKE"
    field      := ("metrics" | "params" | "tags") "." key | ["attributes" "."] attribute
    key        := unquoted | "`" quoted "`" | '"' quoted '"'
    value      := "'" string "'" | '"' string '"' | number
    order_by   := term ["ASC" | "DESC"] ("," term ["ASC" | "DESC"])*
    term       := field | ("MIN" | "MAX") "(" metrics_field ")"

- Prefixes also come singular (``metric.``, ``param.``, ``tag.``,
  ``attribute.``) and as ``attr.``. An unquoted key runs up to whitespace, an
  operator character (``= ! < > ( ) ,``) or a quote: ``metrics.val/acc``,
  ``params.optimizer.lr``; quote any other key: ``metrics.`val acc```.
- Attributes: ``status``, ``name`` (``run_name``), ``id`` (``run_id``),
  ``parent_id``, ``git_commit``, ``host``, ``user`` are strings;
  ``start_time``, ``end_time``, ``heartbeat_at`` (seconds since the epoch)
  and ``experiment_id`` are numbers. ``status`` is one of RUNNING, FINISHED,
  FAILED, KILLED (any case) and reads a RUNNING run whose heartbeat stopped as
  KILLED.
- In a string, ``\\'``, ``\\"`` and ``\\\\`` stand for the quote and the
  backslash; any other backslash is kept, so ``LIKE 'a\\_b'`` matches ``a_b``.
- Numbers: ``3``, ``-0.5``, ``1e-3``.
- Metrics are numbers, params and tags are strings: ``metrics.acc > '0.9'``
  and ``params.lr = 0.01`` are errors. Strings order by code point.

Meaning: ``metrics.k > 1`` matches runs whose latest value of ``k`` is above
1; a NaN value matches no comparison. ``!=`` and ``NOT IN`` match runs that
have the key with another value; ``IS NULL`` matches runs without the key;
``NOT`` matches exactly the runs its operand does not. ``LIKE`` is
case-sensitive (``%`` any text, ``_`` one character, ``\\`` escapes), ``ILIKE``
is not. In ``order_by`` (default direction ASC), ``min(metrics.k)`` and
``max(metrics.k)`` sort by the smallest and largest value logged so far
(the best value of a loss or an accuracy); runs that lack the key, or
whose value is NaN or NULL, come last in both directions; ties are broken by
``start_time DESC, id ASC``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, cast

from sqlalchemy import Double, Select, Table, and_, case, literal, literal_column, not_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement, Grouping
from sqlalchemy.sql.visitors import InternalTraversal

from ..errors import ArgumentTypeError, FilterError
from .schema import RUN_STATUSES, latest_metrics, params, runs, tags

__all__ = [
    "And",
    "Comparison",
    "Field",
    "Node",
    "Not",
    "Or",
    "compile_filter",
    "compile_order_by",
    "parse_filter",
    "quote_string",
    "status_expression",
]

_PREFIXES = {
    "metrics": "metrics", "metric": "metrics",
    "params": "params", "param": "params",
    "tags": "tags", "tag": "tags",
    "attributes": "attributes", "attribute": "attributes", "attr": "attributes", "run": "attributes",
}  # fmt: skip
_STRING_ATTRIBUTES = ("status", "name", "id", "parent_id", "git_commit", "host", "user")
_NUMERIC_ATTRIBUTES = ("start_time", "end_time", "heartbeat_at", "experiment_id")
_ATTRIBUTES = _STRING_ATTRIBUTES + _NUMERIC_ATTRIBUTES
_ATTRIBUTE_ALIASES = {"run_name": "name", "run_id": "id", "user_id": "user"}  # MLflow's names too
_TABLES: dict[str, Table] = {"metrics": latest_metrics, "params": params, "tags": tags}
_ORDERINGS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ORDER_OPERATORS = "=, !=, <, <=, >, >="
_OPERATORS = f"{_ORDER_OPERATORS}, LIKE, ILIKE, IN"

_OPERATOR = re.compile(r"==|!=|<>|<=|>=|=|<|>")
_WORD = re.compile(r"[^\W\d][^\s=!<>(),'\"`]*")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Value = Union[str, float]


@dataclass(frozen=True)
class Field:
    """``metrics.val_acc`` is ``Field("metrics", "val_acc")``; attributes use their canonical name."""

    kind: Literal["metrics", "params", "tags", "attributes"]
    key: str
    position: int = field(default=0, compare=False)  # where the field starts in the filter


@dataclass(frozen=True)
class Comparison:
    """``field op value``; ``op`` is canonical (``==`` is ``=``, ``<>`` is ``!=``, keywords upper case).

    ``value`` is a string or float, a tuple of them for ``IN``/``NOT IN``, and
    ``None`` for ``IS NULL``/``IS NOT NULL``.
    """

    field: Field
    op: str
    value: Value | tuple[Value, ...] | None


@dataclass(frozen=True)
class And:
    """All of ``items`` hold: ``a and b and c``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any of ``items`` holds: ``a or b``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """``item`` does not hold; also true for runs that lack the key ``item`` compares."""

    item: Node


Node = Union[Comparison, And, Or, Not]


def quote_string(value: str) -> str:
    """Quote ``value`` as a filter string literal, escaping quotes and backslashes.

    Example::

        loopml.runs(filter=f"params.comment = {quote_string(comment)}")
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "number", "op", "(", ")", ",", "end"
    text: str  # as written
    position: int
    value: Any = None  # a string's text, a number's float, a word's (prefix or None, key)


def _read_quoted(text: str, start: int, what: str) -> tuple[str, int]:
    quote, chars, i = text[start], [], start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            chars.append(text[i + 1])
            i += 2
        elif char == quote:
            return "".join(chars), i + 1
        else:
            chars.append(char)
            i += 1
    raise FilterError(f"Unterminated {what}: add the closing {quote}", text=text, position=start)


def _tokenize(text: str) -> list[_Token]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, which no database driver accepts
        message = f"Invalid character {text[exc.start]!r}: not valid Unicode"
        raise FilterError(message, text=text, position=exc.start) from None
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "(),":
            tokens.append(_Token(char, char, i))
            i += 1
        elif match := _OPERATOR.match(text, i):
            tokens.append(_Token("op", match.group(), i))
            i = match.end()
        elif char in "'\"":
            value, end = _read_quoted(text, i, "string")
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
        elif match := _WORD.match(text, i):
            end = match.end()
            prefix, dot, key = match.group().partition(".")
            if dot and not key and end < len(text) and text[end] in "`\"":
                key, end = _read_quoted(text, end, "quoted key")
            tokens.append(_Token("word", text[i:end], i, (prefix, key) if dot else (None, prefix)))
            i = end
        elif match := _NUMBER.match(text, i):
            tokens.append(_Token("number", match.group(), i, float(match.group())))
            i = match.end()
        else:
            hint = {"!": " (did you mean '!='?)", "`": " (backticks quote a key: metrics.`val acc`)"}
            raise FilterError(f"Unexpected character {char!r}{hint.get(char, '')}", text=text, position=i)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _shown(token: _Token) -> str:
    return "end of input" if token.kind == "end" else f"'{token.text}'"


class _Parser:
    """Recursive descent over the tokens of one filter or order_by item."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.token
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def accept(self, keyword: str) -> bool:
        token = self.token
        if token.kind == "word" and token.value[0] is None and token.text.upper() == keyword:
            self.advance()
            return True
        return False

    def error(self, message: str, position: int | _Token) -> FilterError:
        if isinstance(position, _Token):
            position = position.position
        return FilterError(message, text=self.text, position=position)

    def parse_filter(self) -> Node:
        node = self.or_expr()
        if self.token.kind == ")":
            raise self.error("Unbalanced parenthesis: this ')' has no matching '('", self.token)
        if self.token.kind != "end":
            message = f"Expected AND, OR or the end of the filter, got {_shown(self.token)}"
            raise self.error(message, self.token)
        return node

    def parse_order_by(self) -> list[tuple[Field, bool, str | None]]:
        terms = []
        while True:
            start = self.token
            aggregate = self.aggregate()
            term = self.field()
            if aggregate is not None:
                if term.kind != "metrics":
                    message = f"{aggregate}() takes a metric, e.g. {aggregate}(metrics.val_acc), got {_shown(start)}"
                    raise self.error(message, term.position)
                if self.token.kind != ")":
                    raise self.error(f"Expected ')' after the metric in {aggregate}(...), got {_shown(self.token)}", self.token)
                self.advance()
            shown = self.text[start.position : self.token.position].strip()
            descending = self.accept("DESC")
            directed = descending or self.accept("ASC")
            terms.append((term, descending, aggregate))
            if self.token.kind == "end":
                return terms
            if self.token.kind != ",":
                expected = "',' or the end of the item" if directed else "ASC or DESC"
                raise self.error(f"Expected {expected} after '{shown}', got {_shown(self.token)}", self.token)
            self.advance()

    def aggregate(self) -> str | None:
        """``min(`` or ``max(`` before a metric in order_by: its smallest or largest value so far."""
        token, following = self.token, self.tokens[min(self.index + 1, len(self.tokens) - 1)]
        named = token.kind == "word" and token.value[0] is None and token.text.lower() in ("min", "max")
        if not (named and following.kind == "("):
            return None
        self.advance()
        self.advance()
        return token.text.lower()

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.accept("OR"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.accept("AND"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.accept("NOT"):
            return Not(self.not_expr())
        if self.token.kind != "(":
            return self.comparison()
        opening = self.advance()
        node = self.or_expr()
        if self.token.kind == "end":
            raise self.error("Unbalanced parenthesis: this '(' is never closed", opening)
        if self.token.kind != ")":
            raise self.error(f"Expected ')', AND or OR, got {_shown(self.token)}", self.token)
        self.advance()
        return node

    def field(self) -> Field:
        token = self.advance()
        prefix, key = token.value if token.kind == "word" else (None, "")
        kind = "attributes" if prefix is None else _PREFIXES.get(prefix.lower())
        key_position = token.position if prefix is None else token.position + len(prefix) + 1
        if kind is None:
            expected = "expected metrics., params., tags. or attributes."
            raise self.error(f"Unknown prefix '{prefix}.' in '{token.text}': {expected}", token)
        if not key and prefix is not None:
            example = f"{prefix}.val_acc or {prefix}.`val acc`"
            raise self.error(f"Expected a key after '{prefix}.', e.g. {example}", key_position)
        if kind == "attributes":
            name = _ATTRIBUTE_ALIASES.get(key.lower(), key.lower())
            known = ", ".join(_ATTRIBUTES)
            if name not in _ATTRIBUTES and prefix is None:
                expected = f"metrics.<key>, params.<key>, tags.<key> or an attribute ({known})"
                raise self.error(f"Expected {expected}, got {_shown(token)}", token)
            if name not in _ATTRIBUTES:
                raise self.error(f"Unknown attribute '{key}': expected one of {known}", key_position)
            key = name
        return Field(kind, key, token.position)  # type: ignore[arg-type]

    def comparison(self) -> Comparison:
        start = self.token
        target = self.field()
        shown = self.text[start.position : self.token.position].strip()
        token = self.advance()
        keyword = token.text.upper() if token.kind == "word" and token.value[0] is None else ""
        if keyword == "IS":
            negated = self.accept("NOT")
            if not self.accept("NULL"):
                raise self.error(f"Expected NULL or NOT NULL after IS, got {_shown(self.token)}", self.token)
            return Comparison(target, "IS NOT NULL" if negated else "IS NULL", None)
        if keyword == "NOT":
            if not self.accept("IN"):
                raise self.error(f"Expected IN after '{shown} NOT', got {_shown(self.token)}", self.token)
            return Comparison(target, "NOT IN", self.value_list(target, "NOT IN", shown))
        if keyword == "IN":
            return Comparison(target, "IN", self.value_list(target, "IN", shown))
        if keyword in ("LIKE", "ILIKE"):
            if _is_numeric(target):
                message = f"{keyword} compares strings, but {_type_phrase(target)}: use {_ORDER_OPERATORS} or IN"
                raise self.error(message, token)
            return Comparison(target, keyword, self.value(target, keyword, shown))
        if token.kind == "op":
            op = {"==": "=", "<>": "!="}.get(token.text, token.text)
            return Comparison(target, op, self.value(target, op, shown))
        message = f"Expected a comparison operator ({_OPERATORS}) after '{shown}', got {_shown(token)}"
        raise self.error(message, token)

    def value_list(self, target: Field, op: str, shown: str) -> tuple[Value, ...]:
        if self.token.kind != "(":
            message = f"Expected '(' after {op}, e.g. {shown} {op} ('a', 'b'), got {_shown(self.token)}"
            raise self.error(message, self.token)
        self.advance()
        values = [self.value(target, op, shown)]
        while self.token.kind == ",":
            self.advance()
            values.append(self.value(target, op, shown))
        if self.token.kind != ")":
            raise self.error(f"Expected ',' or ')' in the {op} list, got {_shown(self.token)}", self.token)
        self.advance()
        return tuple(values)

    def value(self, target: Field, op: str, shown: str) -> Value:
        token = self.advance()
        if token.kind not in ("string", "number"):
            raise self.error(f"Expected a value after '{shown} {op}', got {_shown(token)}", token)
        numeric = _is_numeric(target)
        if numeric != (token.kind == "number"):
            if numeric:
                example = token.value.strip() if _NUMBER.fullmatch(token.value.strip()) else "0.9"
            else:
                example = quote_string(token.text)
            if op.endswith("IN"):
                example = f"({example})"
            raise self.error(f"{_type_phrase(target)}: write {shown} {op} {example}", token)
        value: Value = token.value
        if target.key == "status" and op not in ("LIKE", "ILIKE"):
            value = token.value.upper()
            if value not in RUN_STATUSES:
                expected = ", ".join(RUN_STATUSES)
                raise self.error(f"Unknown status {token.text}: expected one of {expected}", token)
        elif target.key == "experiment_id":
            if not (token.value.is_integer() and abs(token.value) < 2**63):
                raise self.error(f"experiment_id is an integer, got {token.text}", token)
            value = int(token.value)
        elif op in ("LIKE", "ILIKE") and (len(token.value) - len(token.value.rstrip("\\"))) % 2:
            message = "The pattern ends with a backslash that escapes nothing (in a pattern, \\% is a literal %)"
            raise self.error(message, token)
        return value


def _is_numeric(target: Field) -> bool:
    return target.kind == "metrics" or target.key in _NUMERIC_ATTRIBUTES


def _type_phrase(target: Field) -> str:
    numeric = _is_numeric(target)
    if target.kind == "attributes":
        return f"{target.key} is {'a number' if numeric else 'a string'}"
    return f"{target.kind} are {'numbers' if numeric else 'strings'}"


def parse_filter(text: str) -> Node:
    """Parse a filter into its syntax tree, or raise :class:`FilterError`.

    Example::

        parse_filter("metrics.acc > 0.9 and not status = 'failed'")
        # And(items=(Comparison(Field('metrics', 'acc'), op='>', value=0.9),
        #            Not(item=Comparison(Field('attributes', 'status'), op='=', value='FAILED'))))
    """
    if not isinstance(text, str):
        example = '"metrics.acc > 0.9"'
        raise ArgumentTypeError(f"Argument filter should be a string such as {example}, got {type(text).__name__}")
    return _Parser(text).parse_filter()


class _PerDialect(ColumnElement[Any]):
    """``sqlite`` on SQLite, ``default`` elsewhere: for where the same SQL would mean different things."""

    inherit_cache = True
    _traverse_internals = [
        ("default", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, default: ColumnElement[Any], sqlite: ColumnElement[Any]) -> None:
        self.default = Grouping(default)
        self.sqlite = Grouping(sqlite)
        self.type = default.type
        # Keeps SQLAlchemy from appending "= 1" to a LIKE in a WHERE on SQLite.
        self._is_implicitly_boolean = default._is_implicitly_boolean


@compiles(_PerDialect)
def _render_default(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.default, **kw)


@compiles(_PerDialect, "sqlite")
def _render_sqlite(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


def _bytewise(expression: ColumnElement[Any]) -> ColumnElement[Any]:
    # SQLite compares text by code point; PostgreSQL by the database's locale unless told "C".
    return _PerDialect(expression.collate("C"), expression)


def _like(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    # SQLite's LIKE ignores ASCII case; GLOB is its case-sensitive pattern match.
    glob, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            char = next(chars)
        elif char in "%_":
            glob.append("*" if char == "%" else "?")
            continue
        glob.append(f"[{char}]" if char in "*?[" else char)
    glob_match = column.op("GLOB", is_comparison=True)("".join(glob))
    return _PerDialect(column.like(pattern, escape="\\"), glob_match)


def _compare(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    # SQLAlchemy types ==, != and the orderings of a ColumnElement[Any] as Any; they build a boolean clause
    if op == "=":
        return cast(ColumnElement[bool], column == value)
    if op == "!=":
        return cast(ColumnElement[bool], column != value)
    if op == "IN":
        return column.in_(value)
    if op == "NOT IN":
        return column.not_in(value)
    if op == "LIKE":
        return _like(column, value)
    if op == "ILIKE":
        return cast(ColumnElement[bool], column.ilike(value, escape="\\"))
    return cast(ColumnElement[bool], _ORDERINGS[op](_bytewise(column) if isinstance(value, str) else column, value))


def _has_key(table: Table, key: str, condition: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
    query: Select[tuple[Any]] = select(literal_column("1")).where(table.c.run_id == runs.c.id, table.c.key == key)
    if condition is not None:
        query = query.where(condition)
    return query.correlate(runs).exists()


def _compile(node: Node, status: ColumnElement[str]) -> ColumnElement[bool]:
    if isinstance(node, And):
        return and_(*(_compile(item, status) for item in node.items))
    if isinstance(node, Or):
        return or_(*(_compile(item, status) for item in node.items))
    if isinstance(node, Not):
        return not_(_compile(node.item, status))
    target, op = node.field, node.op
    if target.kind != "attributes":
        table = _TABLES[target.kind]
        if op in ("IS NULL", "IS NOT NULL"):
            return ~_has_key(table, target.key) if op == "IS NULL" else _has_key(table, target.key)
        return _has_key(table, target.key, _compare(table.c.value, op, node.value))
    column = status if target.key == "status" else runs.c[target.key]
    if op in ("IS NULL", "IS NOT NULL"):
        return column.is_(None) if op == "IS NULL" else column.is_not(None)
    condition = _compare(column, op, node.value)
    if target.key != "status" and runs.c[target.key].nullable:
        # Two-valued logic: NULL matches no comparison, so NOT matches it.
        condition = and_(column.is_not(None), condition)
    return condition


def compile_filter(text: str | Node | None, *, status: ColumnElement[str]) -> ColumnElement[bool] | None:
    """A WHERE clause over ``schema.runs`` for the filter ``text`` (or its :func:`parse_filter` tree); ``None`` for no filter.

    ``status`` is the run's effective status, usually :func:`status_expression`.

    Example::

        status = status_expression(time.time(), heartbeat_timeout=60)
        where = compile_filter("metrics.acc > 0.9 and tags.team = 'vision'", status=status)
        query = select(runs.c.id).where(where)
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    return _compile(text if isinstance(text, (Comparison, And, Or, Not)) else parse_filter(text), status)


def _sort_key(target: Field, status: ColumnElement[str], aggregate: str | None = None) -> ColumnElement[Any]:
    if target.kind == "attributes":
        column = status if target.key == "status" else runs.c[target.key]
        return _bytewise(column) if target.key in _STRING_ATTRIBUTES else column
    table = _TABLES[target.kind]
    column = table.c.value if aggregate is None else latest_metrics.c[f"{aggregate}_value"]
    value = (
        select(column)
        .where(table.c.run_id == runs.c.id, table.c.key == target.key)
        .correlate(runs)
        .scalar_subquery()
    )
    return value if target.kind == "metrics" else _bytewise(value)


def compile_order_by(
    items: Sequence[str] | str | None, *, status: ColumnElement[str]
) -> list[ColumnElement[Any]]:
    """ORDER BY clauses for ``items`` such as ``["metrics.acc DESC", "name"]``, tie-breaker included.

    Each item may also hold several comma-separated terms.

    Example::

        query = select(runs.c.id).order_by(*compile_order_by(["metrics.acc DESC"], status=status))
    """
    if isinstance(items, str):
        items = [items]
    clauses: list[ColumnElement[Any]] = []
    for item in items or ():
        if not isinstance(item, str):
            example = '["metrics.acc DESC", "name"]'
            raise ArgumentTypeError(f"Argument order_by should hold strings, e.g. {example}, got {item!r}")
        if not item.strip():
            continue
        for target, descending, aggregate in _Parser(item).parse_order_by():
            key = _sort_key(target, status, aggregate)
            clauses.append((key.desc() if descending else key.asc()).nulls_last())
    return [*clauses, runs.c.start_time.desc(), runs.c.id.asc()]


def status_expression(now: float, heartbeat_timeout: float) -> ColumnElement[str]:
    """A run's effective status: RUNNING with a heartbeat older than ``heartbeat_timeout`` reads as KILLED.

    Example::

        query = select(runs.c.id, status_expression(time.time(), 60).label("status"))
    """
    cutoff: ColumnElement[float] = literal(now - heartbeat_timeout, Double())
    stale = and_(runs.c.status == "RUNNING", runs.c.heartbeat_at < cutoff)
    return case((stale, "KILLED"), else_=runs.c.status)
