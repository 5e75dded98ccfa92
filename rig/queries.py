"""ORM queries compiled to SQL once per process, then run with new parameter values.

Django compiles a queryset to SQL every time it is evaluated, and for the agent API's small,
hot reads (a node's token, a stream's destinations, a node's live streams) that compilation
costs more CPU than Postgres spends answering: 0.62 ms of the API process per ``.first()``
against 0.19 ms for the same SQL run from a cursor (`make bench-api` measures the whole
requests). The query is still written once, with the ORM, where its meaning lives
(``streams.selectors.live_streams`` and the like); only its compiled text is kept, with the
field converters the ORM would apply to its rows (JSON, for one).

A parameter is given as a placeholder value the query is built with; a placeholder must survive
the field's preparation unchanged (a string for a text field, an int for a key) and appear
nowhere else among the query's parameters.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connections
from django.db.models import ForeignKey, Func, Model, QuerySet, TextField

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Slot:
    name: str
    hex: bool = False  # the value goes as its hex (a UUID, where the database has no UUID type)

    def value(self, values: dict[str, Any]) -> Any:
        return values[self.name].hex if self.hex else values[self.name]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: list[Any]  # a _Slot where a value is given per run
    converters: list[tuple[int, list[Any], Any]]  # (column, converters, expression)


class CompiledQuery:
    """``build(**placeholders)`` compiled on first use; ``rows(**values)`` runs it."""

    def __init__(self, build: Callable[..., QuerySet], **placeholders: Any) -> None:
        self._build = build
        self._placeholders = placeholders
        self._compiled: dict[str, _Compiled] = {}  # by database alias

    def _compile(self, alias: str) -> _Compiled:
        compiler = self._build(**self._placeholders).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        slots = [_slot(self._placeholders, param) for param in params]
        missing = set(self._placeholders) - {slot.name for slot in slots if isinstance(slot, _Slot)}
        if missing:
            raise ValueError(f"placeholders not among the query's parameters: {sorted(missing)}")
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        return _Compiled(
            sql, slots, [(pos, convs, expr) for pos, (convs, expr) in converters.items()]
        )

    def rows(self, *, using: str = "default", **values: Any) -> list[list[Any]]:
        if using not in self._compiled:
            self._compiled[using] = self._compile(using)
        compiled = self._compiled[using]
        params = [p.value(values) if isinstance(p, _Slot) else p for p in compiled.params]
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = [list(row) for row in cursor.fetchall()]
        for row in rows:
            for pos, convs, expression in compiled.converters:
                for converter in convs:
                    row[pos] = converter(row[pos], expression, connection)
        return rows


def _slot(placeholders: dict[str, Any], param: Any) -> Any:
    """The placeholder's slot where ``param`` is one (as the database gets it: a backend
    without a native UUID type, SQLite, gets a UUID's hex), else the parameter itself."""
    for name, value in placeholders.items():
        if type(value) is type(param) and value == param:
            return _Slot(name)
        if isinstance(value, uuid.UUID) and param == value.hex:
            return _Slot(name, hex=True)
    return param


def columns(model: type[Model]) -> list[str]:
    """The attribute names of the model's columns, for ``values_list`` and ``instance``."""
    return [field.attname for field in model._meta.concrete_fields]


def instance(model: type[M], names: Sequence[str], values: Sequence[Any]) -> M:
    """A model instance from a row of ``columns(model)`` values, as the ORM would load it."""
    return model.from_db("default", list(names), list(values))


def _column(field: Any) -> str:
    column: str | None = field.column
    assert column is not None  # concrete fields only
    return column


def insert_pointed_to(row: Model, *, by: Model, field: str, using: str = "default") -> None:
    """INSERT the new ``row`` and point ``by``'s foreign key ``field`` at it, in one statement
    on PostgreSQL (a data-modifying CTE: one round trip, none of ``save``'s bookkeeping), in two
    elsewhere. ``row``'s primary key is made in Python (a UUID default); ``by`` is saved only
    in that one column, as ``save(update_fields=[field])`` would."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        row.save(force_insert=True, using=using)
        setattr(by, field, row)
        by.save(update_fields=[field], using=using)
        return
    fields = row._meta.concrete_fields
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    pointer, key_field = by._meta.get_field(field), by._meta.pk
    assert isinstance(pointer, ForeignKey) and key_field is not None
    name = connection.ops.quote_name
    table, target = name(row._meta.db_table), name(by._meta.db_table)
    columns, slots = ", ".join(name(_column(f)) for f in fields), ", ".join(["%s"] * len(fields))
    link, key = name(_column(pointer)), name(_column(key_field))
    # Only the models' own table and column names go into the text; values are parameters.
    sql = (
        f"WITH inserted AS (INSERT INTO {table} ({columns}) VALUES ({slots}))"  # noqa: S608
        f" UPDATE {target} SET {link} = %s WHERE {key} = %s"
    )
    pk = values[fields.index(row._meta.pk)]  # as prepared for the INSERT
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, pk, key_field.get_db_prep_save(by.pk, connection)])
    row._state.adding, row._state.db = False, using
    setattr(by, field, row)


class UnflushedCommit(Func):
    """A column whose evaluation lets the rest of its transaction commit without waiting for its
    WAL to reach the disk: PostgreSQL's ``synchronous_commit = off``, for that one transaction
    (``set_config(..., is_local => true)``), set by a statement the transaction runs anyway.

    For the publish hook (``agents.selectors.node_by_token``): on these machines a WAL flush
    takes 0.2 ms at p50 but stalls for 30-50 ms about once in a thousand flushes, and up to
    0.44 s, and those stalls were the hook's p99 (`make bench-api`). What it risks: if the
    database server itself crashes in the ~0.6 s (3 x ``wal_writer_delay``) after the commit,
    the transaction is lost as a whole (never half-kept). A lost publish heals: the node's agent
    drops a publisher whose session the control plane does not list, and OBS reconnects through
    a new hook. SQLite (`make up`) commits every transaction this way (synchronous=NORMAL).
    Evaluated inside a savepoint, it holds for the outer transaction unless the savepoint is
    rolled back (no caller nests the hook's transaction)."""

    template = "set_config('synchronous_commit', 'off', true)"
    output_field = TextField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[()]]:
        return "NULL", ()
