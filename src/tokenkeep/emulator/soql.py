"""A practical subset of SOQL, evaluated against an org's records (syntax: soql_syntax.py).

Supported::

    SELECT field, Parent.Field, (SELECT ... FROM Children ...), ...
         | COUNT() | FIELDS(ALL|STANDARD) | COUNT|COUNT_DISTINCT|SUM|AVG|MIN|MAX(field) [alias]
    FROM Object
    [WHERE cond]   cond: field op literal | field [NOT] IN (literals) | field LIKE 'p%'
                   | NOT cond | cond AND cond | cond OR cond | ( cond )
                   op: = != <> < <= > >=   literal: 'text' (backslash escapes), 12, -1.5,
                   true, false, null, 2026-01-31, 2026-01-31T10:00:00Z
                   date literals: TODAY, YESTERDAY, TOMORROW, LAST_N_DAYS:n, NEXT_N_DAYS:n,
                   THIS|LAST|NEXT_MONTH, THIS|LAST|NEXT_YEAR (UTC, the emulator's clock)
    [GROUP BY field, ...]
    [ORDER BY field|AGG(field) [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

Keywords, object and field names are case-insensitive; text comparisons and LIKE are too,
as on Salesforce. Errors carry Salesforce's errorCode (MALFORMED_QUERY, INVALID_FIELD,
INVALID_TYPE, INVALID_QUERY_FILTER_OPERATOR) and its message layout (the query line, a
caret, ``ERROR at Row:r:Column:c`` and the reason).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from tokenkeep.emulator.records import (
    FieldSpec,
    OrgRecords,
    SObjectSchema,
    id15_to_18,
    is_valid_id,
)
from tokenkeep.emulator.soql_syntax import (
    Cond,
    FieldRef,
    Literal,
    Query,
    SoqlError,
    parse,
    syntax_error,
)

__all__ = ["BoundQuery", "Query", "SoqlError", "bind", "parse"]

_TEXT_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox"}
)
_ID_TYPES = frozenset({"id", "reference"})


Row = dict[str, Any]
Getter = Callable[[Row], Any]


# One step up a parent relationship: (relationship name, reference field, parent schema).
Hop = tuple[str, str, SObjectSchema]


@dataclass(slots=True)
class _Column:
    """A selected field: its output name, and for a parent field the hops up to it."""

    name: str
    spec: FieldSpec
    getter: Getter
    hops: tuple[Hop, ...] = ()  # Account.Owner.Name: (Account, AccountId), (Owner, OwnerId)

    @property
    def label(self) -> str:
        return ".".join([*(h[0] for h in self.hops), self.name])


@dataclass(slots=True)
class BoundQuery:
    """A query checked against the schema, ready to run against one org's records."""

    query: Query
    schema: SObjectSchema
    columns: list[_Column]
    predicate: Callable[[Row], bool] | None
    sort_keys: list[tuple[Getter, bool, bool, bool]]  # getter, desc, nulls_first, fold case
    store: OrgRecords
    # Subqueries: (relationship name, the child query, the child's field naming the parent).
    children: list[tuple[str, BoundQuery, str]] = field(default_factory=list)
    _groups: dict[str, dict[str, list[Row]]] | None = None
    # Aggregate queries (GROUP BY and/or SUM(...), COUNT(...)...).
    group_columns: list[_Column] = field(default_factory=list)
    aggregates: list[tuple[str, Getter, str]] = field(default_factory=list)  # func, get, name
    group_order: list[tuple[str, bool, bool]] = field(default_factory=list)  # key, desc, nulls

    @property
    def is_aggregate(self) -> bool:
        """True for GROUP BY / aggregate-function queries (answered as AggregateResult)."""
        return bool(self.query.aggregates or self.query.group_by)

    def aggregate_records(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """One ``AggregateResult`` per group (one in all without GROUP BY)."""
        rows = self._ordered(include_deleted)
        groups: dict[tuple[Any, ...], list[Row]] = {}
        if self.group_columns:
            for row in rows:
                key = tuple(_fold(c.getter(row), c.spec) for c in self.group_columns)
                groups.setdefault(key, []).append(row)
        else:
            groups[()] = rows
        out: list[dict[str, Any]] = []
        for members in groups.values():
            record: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
            for col in self.group_columns:
                record[col.name] = col.getter(members[0])
            for func, getter, name in self.aggregates:
                record[name] = _aggregate(func, [getter(m) for m in members])
            out.append(record)
        for key_name, desc, nulls_first in reversed(self.group_order):
            null_flag = 0 if nulls_first != desc else 2

            def sort_key(r: dict[str, Any], k: str = key_name, nf: int = null_flag) -> Any:
                v = r.get(k)
                if v is None:
                    return (nf, 0)
                return (1, v.lower() if isinstance(v, str) else v)

            out.sort(key=sort_key, reverse=desc)
        q = self.query
        end = None if q.limit is None else q.offset + q.limit
        return out[q.offset : end]

    def rows(self, include_deleted: bool = False) -> list[Row]:
        """Matching stored rows after WHERE, ORDER BY, OFFSET and LIMIT."""
        rows = self._ordered(include_deleted)
        q = self.query
        end = None if q.limit is None else q.offset + q.limit
        if q.offset or end is not None:
            rows = rows[q.offset : end]
        return rows

    def _ordered(self, include_deleted: bool) -> list[Row]:
        pred = self.predicate
        source = self.store.rows(self.schema.name, include_deleted)
        rows = [r for r in source if pred(r)] if pred else list(source)
        for getter, desc, nulls_first, fold in reversed(self.sort_keys):
            # Python's sort is stable (also with reverse=True), so sorting by the last key
            # first gives a multi-key order. The flag puts nulls where they belong.
            null_flag = 0 if nulls_first != desc else 2

            def key(r: Row, g: Getter = getter, nf: int = null_flag, f: bool = fold) -> Any:
                v = g(r)
                if v is None:
                    return (nf, 0)
                return (1, v.lower() if f else v)

            rows.sort(key=key, reverse=desc)
        return rows

    def _child_groups(self) -> dict[str, dict[str, list[Row]]]:
        """Each subquery's rows grouped by parent id (one pass per subquery, cached)."""
        if self._groups is None:
            self._groups = {}
            for name, child, link in self.children:
                groups: dict[str, list[Row]] = {}
                for row in child._ordered(False):
                    parent_id = row.get(link)
                    if parent_id is not None:
                        groups.setdefault(parent_id, []).append(row)
                q = child.query
                if q.offset or q.limit is not None:  # LIMIT/OFFSET apply per parent
                    end = None if q.limit is None else q.offset + q.limit
                    groups = {k: v[q.offset : end] for k, v in groups.items()}
                self._groups[name] = groups
        return self._groups

    def project(self, row: Row, version: str) -> dict[str, Any]:
        """One output record: ``attributes`` then the selected fields in order."""
        name = self.schema.name
        out: dict[str, Any] = {
            "attributes": {
                "type": name,
                "url": f"/services/data/v{version}/sobjects/{name}/{row['Id']}",
            }
        }
        for col in self.columns:
            if not col.hops:
                out[col.name] = row.get(col.spec.name)
                continue
            self._place(out, row, col, version)
        if self.children:
            groups = self._child_groups()
            for name, child, _ in self.children:
                kids = groups[name].get(row["Id"])
                out[name] = (
                    {
                        "totalSize": len(kids),
                        "done": True,
                        "records": [child.project(k, version) for k in kids],
                    }
                    if kids
                    else None
                )
        return out

    def _place(self, out: dict[str, Any], row: Row, col: _Column, version: str) -> None:
        """Put a parent field into nested ``{"attributes", ...}`` dicts (or a null parent).

        Fields of the same parent share its nested dict, as in Salesforce's answers.
        """
        node = out
        current = row
        for rel, link, target in col.hops:
            parent_id = current.get(link)
            parent = self.store.get(target.name, parent_id) if parent_id else None
            nested = node.get(rel, _MISSING)
            if nested is _MISSING:
                nested = None if parent is None else _attributes(target.name, parent, version)
                node[rel] = nested
            if nested is None or parent is None:
                return
            node, current = nested, parent
        node[col.spec.name] = current.get(col.spec.name)


def _attributes(name: str, record: Row, version: str) -> dict[str, Any]:
    return {
        "attributes": {
            "type": name,
            "url": f"/services/data/v{version}/sobjects/{name}/{record['Id']}",
        }
    }


_MISSING: Any = object()
MAX_HOPS = 5  # Salesforce allows five levels of parent relationships


def bind(query: Query | str, store: OrgRecords) -> BoundQuery:
    """Resolve object and field names; raises INVALID_TYPE / INVALID_FIELD like Salesforce."""
    if isinstance(query, str):
        query = parse(query)
    schema = store.schema(query.sobject)
    if schema is None:
        raise syntax_error(
            query.text,
            query.sobject_pos,
            "INVALID_TYPE",
            f"sObject type '{query.sobject}' is not supported. If you are attempting to use a "
            "custom object, be sure to append the '__c' after the entity name. Please "
            "reference your WSDL or the describe call for the appropriate names.",
        )
    columns: list[_Column] = []
    if query.fields_macro in ("ALL", "STANDARD"):
        columns = [_Column(f.name, f, _plain(f)) for f in schema.fields]
    seen: set[str] = set()
    for ref in query.fields:
        col = _resolve(query, schema, store, ref)
        label = col.label
        if label.lower() in seen:
            raise syntax_error(
                query.text, ref.pos, "MALFORMED_QUERY", f"duplicate field selected: {ref.path}"
            )
        seen.add(label.lower())
        columns.append(col)
    predicate = _compile(query, schema, store, query.where) if query.where else None
    sort_keys = []
    if not (query.aggregates or query.group_by):
        for ref, desc, nulls_first in query.order:
            col = _resolve(query, schema, store, ref)
            sort_keys.append((col.getter, desc, nulls_first, col.spec.type in _TEXT_TYPES))
    bound = BoundQuery(query, schema, columns, predicate, sort_keys, store)
    if query.aggregates or query.group_by:
        _bind_aggregates(bound, query, schema, store)
    for sub in query.subqueries:
        relation = schema.children.get(sub.sobject.lower())
        if relation is None:
            raise syntax_error(
                query.text,
                sub.sobject_pos,
                "INVALID_TYPE",
                f"Didn't understand relationship '{sub.sobject}' in FROM part of query call. "
                "If you are attempting to use a custom relationship, be sure to append the "
                "'__r' after the custom relationship name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        name, child_name, link = relation
        child = bind(dataclasses.replace(sub, sobject=child_name), store)
        bound.children.append((name, child, link))
    return bound


_NUMERIC_TYPES = frozenset({"int", "double", "currency", "percent"})


def _bind_aggregates(
    bound: BoundQuery, query: Query, schema: SObjectSchema, store: OrgRecords
) -> None:
    bound.group_columns = [_resolve(query, schema, store, ref) for ref in query.group_by]
    expressions: dict[str, str] = {}  # "sum(amount)" -> output name, for ORDER BY
    for func, ref, name in query.aggregates:
        col = _resolve(query, schema, store, ref)
        if func in ("SUM", "AVG") and col.spec.type not in _NUMERIC_TYPES:
            raise syntax_error(
                query.text,
                ref.pos,
                "INVALID_FIELD",
                f"field {ref.path} does not support aggregate operator {func}",
            )
        bound.aggregates.append((func, col.getter, name))
        expressions[f"{func}({ref.path})".lower()] = name
    grouped = {
        ref.path.lower(): col.name
        for ref, col in zip(query.group_by, bound.group_columns, strict=True)
    }
    for ref, desc, nulls_first in query.order:
        key = expressions.get(ref.path.lower()) or grouped.get(ref.path.lower())
        if key is None:
            raise syntax_error(
                query.text,
                ref.pos,
                "MALFORMED_QUERY",
                f"Ordered field must be grouped or aggregated: {ref.path}",
            )
        bound.group_order.append((key, desc, nulls_first))


def _fold(value: Any, spec: FieldSpec) -> Any:
    # Salesforce groups text case-insensitively (the first spelling seen is shown).
    return value.lower() if isinstance(value, str) and spec.type in _TEXT_TYPES else value


def _aggregate(func: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if func == "COUNT":
        return len(present)
    if func == "COUNT_DISTINCT":
        return len({v.lower() if isinstance(v, str) else v for v in present})
    if not present:
        return None
    if func == "SUM":
        return sum(present)
    if func == "AVG":
        return sum(present) / len(present)
    return min(present) if func == "MIN" else max(present)


def _plain(spec: FieldSpec) -> Getter:
    name = spec.name
    return lambda r: r.get(name)


def _resolve(query: Query, schema: SObjectSchema, store: OrgRecords, ref: FieldRef) -> _Column:
    parts = ref.path.split(".")
    if len(parts) == 1:
        spec = schema.field(parts[0])
        if spec is None:
            raise _no_column(query, ref, parts[0], schema.name)
        return _Column(spec.name, spec, _plain(spec))
    hops: list[Hop] = []
    current = schema
    for rel_name in parts[:-1]:
        rel = next(
            (
                f
                for f in current.fields
                if f.relationship_name and f.relationship_name.lower() == rel_name.lower()
            ),
            None,
        )
        target = store.schema(rel.reference_to[0]) if rel and rel.reference_to else None
        if rel is None or target is None or rel.relationship_name is None:
            raise _bad_relationship(query, ref, rel_name)
        hops.append((rel.relationship_name, rel.name, target))
        current = target
    if len(hops) > MAX_HOPS:
        raise _bad_relationship(query, ref, parts[MAX_HOPS])
    spec = current.field(parts[-1])
    if spec is None:
        raise _no_column(query, ref, parts[-1], current.name)
    path = tuple(hops)
    pname = spec.name

    def getter(r: Row) -> Any:
        record: Row | None = r
        for _, link, target in path:
            pid = record.get(link) if record else None
            record = store.get(target.name, pid) if pid else None
        return record.get(pname) if record else None

    return _Column(spec.name, spec, getter, path)


def _bad_relationship(query: Query, ref: FieldRef, name: str) -> SoqlError:
    return syntax_error(
        query.text,
        ref.pos,
        "INVALID_FIELD",
        f"Didn't understand relationship '{name}' in field path. If you are attempting "
        "to use a custom relationship, be sure to append the '__r' after the custom "
        "relationship name. Please reference your WSDL or the describe call for the "
        "appropriate names.",
    )


def _no_column(query: Query, ref: FieldRef, name: str, entity: str) -> SoqlError:
    return syntax_error(
        query.text,
        ref.pos,
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{entity}'. If you are attempting to use a "
        "custom field, be sure to append the '__c' after the custom field name. Please "
        "reference your WSDL or the describe call for the appropriate names.",
    )


def _compile(
    query: Query, schema: SObjectSchema, store: OrgRecords, cond: Cond
) -> Callable[[Row], bool]:
    """Turn a WHERE tree into one closure (evaluated per row without re-inspecting types)."""
    if cond.kind in ("and", "or"):
        parts = [_compile(query, schema, store, c) for c in cond.args]
        if cond.kind == "and":
            return lambda r: all(p(r) for p in parts)
        return lambda r: any(p(r) for p in parts)
    if cond.kind == "not":
        inner = _compile(query, schema, store, cond.args[0])
        return lambda r: not inner(r)
    ref: FieldRef = cond.args[0]
    col = _resolve(query, schema, store, ref)
    get = col.getter
    spec = col.spec
    if cond.kind == "like":
        lit: Literal = cond.args[1]
        if spec.type not in _TEXT_TYPES and spec.type not in _ID_TYPES:
            raise syntax_error(
                query.text,
                ref.pos,
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator on {spec.type} field: LIKE",
            )
        regex = _like_regex(_check(query, spec, lit, ref))

        def like(r: Row) -> bool:
            v = get(r)
            return v is not None and regex.fullmatch(v) is not None

        return like
    if cond.kind == "in":
        negated: bool = cond.args[1]
        values = {_norm(spec, _check(query, spec, lit, ref)) for lit in cond.args[2]}
        if negated:
            return lambda r: _norm(spec, get(r)) not in values
        return lambda r: _norm(spec, get(r)) in values
    op: str = cond.args[1]
    lit = cond.args[2]
    if lit.kind == "daterange":
        return _in_range(get, op, _date_range(query, spec, lit, ref, store.clock.now().date()))
    target = _norm(spec, _check(query, spec, lit, ref))
    if target is None:
        if op not in ("=", "!="):
            raise syntax_error(
                query.text, lit.pos, "MALFORMED_QUERY", f"invalid operator with null: {op}"
            )
        return (lambda r: get(r) is None) if op == "=" else (lambda r: get(r) is not None)
    return _comparison(spec, get, op, target)


def _date_range(
    query: Query, spec: FieldSpec, lit: Literal, ref: FieldRef, today: date
) -> tuple[str, str]:
    """[start, end) of a relative date literal, in the field's own text format."""
    if spec.type not in ("date", "datetime"):
        _check(query, spec, Literal("date", None, lit.pos), ref)  # raises the type error
    name, n = lit.value
    if name.endswith("_MONTH"):
        shift = {"THIS_MONTH": 0, "LAST_MONTH": -1, "NEXT_MONTH": 1}[name]
        months = today.year * 12 + today.month - 1 + shift
        start = date(months // 12, months % 12 + 1, 1)
        end = date((months + 1) // 12, (months + 1) % 12 + 1, 1)
    elif name.endswith("_YEAR"):
        year = today.year + {"THIS_YEAR": 0, "LAST_YEAR": -1, "NEXT_YEAR": 1}[name]
        start, end = date(year, 1, 1), date(year + 1, 1, 1)
    else:
        day = timedelta(days=1)
        start, end = {
            "TODAY": (today, today + day),
            "YESTERDAY": (today - day, today),
            "TOMORROW": (today + day, today + 2 * day),
            # LAST_N_DAYS:n covers today and the n days before it; NEXT_N_DAYS:n the n
            # days after today.
            "LAST_N_DAYS": (today - n * day, today + day),
            "NEXT_N_DAYS": (today + day, today + (n + 1) * day),
        }[name]
    if spec.type == "datetime":
        return f"{start.isoformat()}T00:00:00.000+0000", f"{end.isoformat()}T00:00:00.000+0000"
    return start.isoformat(), end.isoformat()


def _in_range(get: Getter, op: str, bounds: tuple[str, str]) -> Callable[[Row], bool]:
    lo, hi = bounds
    if op == "=":
        return lambda r: (v := get(r)) is not None and lo <= v < hi
    if op == "!=":
        return lambda r: (v := get(r)) is None or not lo <= v < hi
    if op == "<":
        return lambda r: (v := get(r)) is not None and v < lo
    if op == "<=":
        return lambda r: (v := get(r)) is not None and v < hi
    if op == ">":
        return lambda r: (v := get(r)) is not None and v >= hi
    return lambda r: (v := get(r)) is not None and v >= lo


def _comparison(spec: FieldSpec, get: Getter, op: str, target: Any) -> Callable[[Row], bool]:
    def value(r: Row) -> Any:
        return _norm(spec, get(r))

    if op == "=":
        return lambda r: value(r) == target
    if op == "!=":
        return lambda r: value(r) != target
    # Ordering comparisons are false for null values (SQL-like), never an error.
    if op == "<":
        return lambda r: (v := value(r)) is not None and v < target
    if op == "<=":
        return lambda r: (v := value(r)) is not None and v <= target
    if op == ">":
        return lambda r: (v := value(r)) is not None and v > target
    return lambda r: (v := value(r)) is not None and v >= target


def _norm(spec: FieldSpec, value: Any) -> Any:
    """The comparable form: folded text, 18-character ids."""
    if value is None:
        return None
    if spec.type in _TEXT_TYPES:
        return value.lower()
    if spec.type in _ID_TYPES and len(value) == 15 and is_valid_id(value):
        return id15_to_18(value)
    return value


_EXPECTED = {
    "boolean": ("boolean", "boolean"),
    "int": ("number", "integer"),
    "double": ("number", "double"),
    "currency": ("number", "currency"),
    "percent": ("number", "percent"),
    "date": ("date", "date"),
    "datetime": ("datetime", "dateTime"),
}


def _check(query: Query, spec: FieldSpec, lit: Literal, ref: FieldRef) -> Any:
    """The literal's value if its kind fits the field; Salesforce's error otherwise."""
    if lit.kind == "null":
        return None
    if spec.type in _TEXT_TYPES or spec.type in _ID_TYPES:
        if lit.kind != "string":
            raise syntax_error(
                query.text,
                lit.pos,
                "INVALID_QUERY_FILTER_OPERATOR",
                f"value of filter criterion for field '{ref.path}' must be of type string "
                "and should be enclosed in quotes",
            )
        return lit.value
    kind, label = _EXPECTED.get(spec.type, ("string", spec.type))
    if lit.kind != kind:
        raise syntax_error(
            query.text,
            lit.pos,
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{ref.path}' must be of type {label} "
            "and should not be enclosed in quotes",
        )
    return lit.value


def _like_regex(pattern: str) -> re.Pattern[str]:
    """SOQL LIKE: ``%`` any run, ``_`` one character, ``\\%``/``\\_`` literal; no case."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)
