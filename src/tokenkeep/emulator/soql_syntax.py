"""SOQL syntax for the emulator: tokens, the syntax tree and a recursive-descent parser.

Evaluation against an org's records lives in :mod:`tokenkeep.emulator.soql`. Error
messages follow Salesforce's layout: the query line, a caret under the column,
``ERROR at Row:r:Column:c`` and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Cond", "FieldRef", "Literal", "Query", "SoqlError", "parse", "syntax_error"]


class SoqlError(Exception):
    """A query Salesforce would refuse (HTTP 400 with ``error_code``)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


# -- tokens -------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),:])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # string datetime date number op punct ident eof
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


def _tokenize(q: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(q):
        m = _TOKEN_RE.match(q, pos)
        if m is None:
            raise syntax_error(q, pos, "MALFORMED_QUERY", f"unexpected token: '{q[pos]}'")
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("eof", "<EOF>", len(q)))
    return toks


def syntax_error(q: str, pos: int, code: str, reason: str) -> SoqlError:
    """A SoqlError in Salesforce's layout: the line, a caret under the column, row:column."""
    line_start = q.rfind("\n", 0, pos) + 1
    line_end = q.find("\n", pos)
    line = q[line_start : line_end if line_end >= 0 else len(q)]
    row = q.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    return SoqlError(
        code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{reason}"
    )


def _unquote(text: str) -> str:
    out = []
    i = 1
    end = len(text) - 1
    while i < end:
        c = text[i]
        if c == "\\" and i + 1 < end:
            nxt = text[i + 1]
            # \% and \_ stay escaped: they only mean something inside LIKE patterns.
            out.append("\\" + nxt if nxt in "%_" else _ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# -- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A value in a WHERE clause, with the lexical kind it was written as."""

    kind: str  # string number boolean null date datetime
    value: Any
    pos: int


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field path as written (``Name``, ``Account.Name``) and where it stands."""

    path: str
    pos: int


@dataclass(frozen=True, slots=True)
class Cond:
    """A WHERE node: ``and``/``or`` (args), ``not`` (args[0]), ``cmp``, ``in``, ``like``."""

    kind: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class Query:
    """A parsed (unbound) query."""

    text: str
    sobject: str
    sobject_pos: int
    fields: list[FieldRef] = field(default_factory=list)
    count_only: bool = False  # SELECT COUNT()
    # SUM(Amount) total, COUNT(Id): (function, field, output name: alias or exprN)
    aggregates: list[tuple[str, FieldRef, str]] = field(default_factory=list)
    group_by: list[FieldRef] = field(default_factory=list)
    fields_macro: str | None = None  # FIELDS(ALL|STANDARD)
    where: Cond | None = None
    order: list[tuple[FieldRef, bool, bool]] = field(default_factory=list)  # ref, desc, nulls1st
    limit: int | None = None
    offset: int = 0
    subqueries: list[Query] = field(default_factory=list)  # (SELECT ... FROM Contacts)


# Relative date literals (UTC days of the emulator's clock).
_DATE_RANGES = frozenset(
    {"TODAY", "YESTERDAY", "TOMORROW", "THIS_MONTH", "LAST_MONTH", "NEXT_MONTH"}
    | {"THIS_YEAR", "LAST_YEAR", "NEXT_YEAR"}
)
_DATE_RANGES_N = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS"})
AGGREGATES = frozenset({"COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"})
MAX_OFFSET = 2000  # Salesforce refuses larger OFFSETs
_CLAUSE_WORDS = frozenset({"FROM", "WHERE", "ORDER", "LIMIT", "OFFSET", "GROUP", "HAVING"})


class _Parser:
    def __init__(self, q: str) -> None:
        self.q = q
        self.toks = _tokenize(q)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def unexpected(self, tok: _Tok | None = None) -> SoqlError:
        tok = tok or self.tok
        shown = tok.text if tok.kind != "eof" else "<EOF>"
        return syntax_error(self.q, tok.pos, "MALFORMED_QUERY", f"unexpected token: '{shown}'")

    def keyword(self, word: str) -> bool:
        if self.tok.upper == word:
            self.next()
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise self.unexpected()

    def expect_punct(self, text: str) -> None:
        if self.tok.kind != "punct" or self.tok.text != text:
            raise self.unexpected()
        self.next()

    def integer(self) -> int:
        tok = self.next()
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.unexpected(tok)
        return int(tok.text)

    def parse(self, nested: bool = False) -> Query:
        self.expect_keyword("SELECT")
        query = Query(self.q, "", 0)
        self.select_list(query, nested)
        self.expect_keyword("FROM")
        obj = self.next()
        if obj.kind != "ident" or "." in obj.text:
            raise self.unexpected(obj)
        query.sobject, query.sobject_pos = obj.text, obj.pos
        if self.keyword("WHERE"):
            query.where = self.or_expr()
        if self.keyword("GROUP"):
            self.expect_keyword("BY")
            query.group_by = [self.field_ref()]
            while self.tok.text == ",":
                self.next()
                query.group_by.append(self.field_ref())
        self._check_grouping(query)
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            query.order = self.order_list()
        if self.keyword("LIMIT"):
            query.limit = self.integer()
        if self.keyword("OFFSET"):
            at = self.tok
            query.offset = self.integer()
            if query.offset > MAX_OFFSET:
                raise syntax_error(
                    self.q,
                    at.pos,
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    f"Maximum SOQL offset allowed is {MAX_OFFSET}",
                )
        if not nested and self.tok.kind != "eof":
            raise self.unexpected()
        return query

    def select_list(self, query: Query, nested: bool) -> None:
        while True:
            tok = self.next()
            if tok.kind == "punct" and tok.text == "(" and not nested:
                # A parent-to-child subquery (one level, as on Salesforce).
                query.subqueries.append(self.parse(nested=True))
                self.expect_punct(")")
            elif tok.kind != "ident" or tok.upper in _CLAUSE_WORDS:
                raise self.unexpected(tok)
            elif self.tok.text == "(" and (tok.upper in AGGREGATES or tok.upper == "FIELDS"):
                self.next()
                if tok.upper == "COUNT" and self.tok.text == ")":
                    self.next()
                    query.count_only = True
                else:
                    arg = self.next()
                    if arg.kind != "ident":
                        raise self.unexpected(arg)
                    self.expect_punct(")")
                    if tok.upper == "FIELDS":
                        if arg.upper not in ("ALL", "STANDARD", "CUSTOM"):
                            raise self.unexpected(arg)
                        query.fields_macro = arg.upper
                    else:
                        # Unaliased aggregates are named expr0, expr1, ... in order.
                        unnamed = sum(1 for a in query.aggregates if a[2].startswith("expr"))
                        alias = f"expr{unnamed}"
                        if self.tok.kind == "ident" and self.tok.upper not in _CLAUSE_WORDS:
                            alias = self.next().text
                        query.aggregates.append((tok.upper, FieldRef(arg.text, arg.pos), alias))
            else:
                query.fields.append(FieldRef(tok.text, tok.pos))
            if self.tok.text != ",":
                break
            self.next()
        if query.count_only and (query.fields or query.fields_macro or query.aggregates):
            first = query.fields[0] if query.fields else None
            raise syntax_error(
                self.q,
                first.pos if first else 0,
                "MALFORMED_QUERY",
                "Field must be grouped or aggregated: " + (first.path if first else "FIELDS"),
            )

    def _check_grouping(self, query: Query) -> None:
        """With aggregates or GROUP BY, every plain selected field must be grouped."""
        if not (query.aggregates or query.group_by):
            return
        grouped = {ref.path.lower() for ref in query.group_by}
        for ref in query.fields:
            if ref.path.lower() not in grouped:
                raise syntax_error(
                    self.q,
                    ref.pos,
                    "MALFORMED_QUERY",
                    f"Field must be grouped or aggregated: {ref.path}",
                )
        if query.fields_macro or query.subqueries:
            raise syntax_error(self.q, 0, "MALFORMED_QUERY", "Field must be grouped or aggregated")

    def field_ref(self) -> FieldRef:
        tok = self.next()
        if tok.kind != "ident" or tok.upper in _CLAUSE_WORDS:
            raise self.unexpected(tok)
        return FieldRef(tok.text, tok.pos)

    def order_list(self) -> list[tuple[FieldRef, bool, bool]]:
        items = []
        while True:
            tok = self.next()
            if tok.kind != "ident":
                raise self.unexpected(tok)
            if tok.upper in AGGREGATES and self.tok.text == "(":
                # ORDER BY SUM(Amount): kept as the expression text, matched when binding.
                self.next()
                arg = self.field_ref()
                self.expect_punct(")")
                tok = _Tok("ident", f"{tok.upper}({arg.path})", tok.pos)
            desc = False
            if self.keyword("DESC"):
                desc = True
            else:
                self.keyword("ASC")
            nulls_first = not desc  # Salesforce's default: nulls sort as the lowest value
            if self.keyword("NULLS"):
                if self.keyword("FIRST"):
                    nulls_first = True
                else:
                    self.expect_keyword("LAST")
                    nulls_first = False
            items.append((FieldRef(tok.text, tok.pos), desc, nulls_first))
            if self.tok.text != ",":
                return items
            self.next()

    def or_expr(self) -> Cond:
        args = [self.and_expr()]
        while self.keyword("OR"):
            args.append(self.and_expr())
        return args[0] if len(args) == 1 else Cond("or", tuple(args))

    def and_expr(self) -> Cond:
        args = [self.not_expr()]
        while self.keyword("AND"):
            args.append(self.not_expr())
        return args[0] if len(args) == 1 else Cond("and", tuple(args))

    def not_expr(self) -> Cond:
        if self.keyword("NOT"):
            return Cond("not", (self.not_expr(),))
        if self.tok.text == "(" and self.tok.kind == "punct":
            self.next()
            inner = self.or_expr()
            self.expect_punct(")")
            return inner
        return self.predicate()

    def predicate(self) -> Cond:
        tok = self.next()
        if tok.kind != "ident" or tok.upper in _CLAUSE_WORDS:
            raise self.unexpected(tok)
        ref = FieldRef(tok.text, tok.pos)
        if self.keyword("LIKE"):
            lit = self.literal()
            return Cond("like", (ref, lit))
        negated = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect_punct("(")
            values = [self.literal()]
            while self.tok.text == ",":
                self.next()
                values.append(self.literal())
            self.expect_punct(")")
            return Cond("in", (ref, negated, tuple(values)))
        if negated:
            raise self.unexpected()
        op = self.next()
        if op.kind != "op":
            raise self.unexpected(op)
        return Cond("cmp", (ref, "!=" if op.text == "<>" else op.text, self.literal()))

    def literal(self) -> Literal:
        tok = self.next()
        if tok.kind == "string":
            return Literal("string", _unquote(tok.text), tok.pos)
        if tok.kind == "number":
            text = tok.text
            return Literal("number", float(text) if "." in text else int(text), tok.pos)
        if tok.kind in ("date", "datetime"):
            try:
                stamp = datetime.fromisoformat(tok.text).astimezone(UTC)
            except ValueError:
                raise syntax_error(
                    self.q, tok.pos, "MALFORMED_QUERY", f"invalid date/time: {tok.text}"
                ) from None
        if tok.kind == "date":
            return Literal("date", tok.text, tok.pos)
        if tok.kind == "datetime":
            text = stamp.isoformat(timespec="milliseconds")[:-6] + "+0000"
            return Literal("datetime", text, tok.pos)
        if tok.upper in ("TRUE", "FALSE"):
            return Literal("boolean", tok.upper == "TRUE", tok.pos)
        if tok.upper == "NULL":
            return Literal("null", None, tok.pos)
        if tok.upper in _DATE_RANGES:
            return Literal("daterange", (tok.upper, 0), tok.pos)
        if tok.upper in _DATE_RANGES_N:
            self.expect_punct(":")
            return Literal("daterange", (tok.upper, self.integer()), tok.pos)
        raise self.unexpected(tok)


def parse(q: str) -> Query:
    """Parse SOQL text; raises :class:`SoqlError` (MALFORMED_QUERY) on bad syntax."""
    if not q.strip():
        raise SoqlError("MALFORMED_QUERY", "unexpected token: '<EOF>'")
    return _Parser(q).parse()
