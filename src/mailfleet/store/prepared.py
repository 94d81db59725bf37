"""Hot-path statements: compiled once per dialect, run on the driver's cursor.

SQLAlchemy's work around each execution (cache key, execution context,
parameter and result processing) costs 50 to 200 µs here, more than SQLite
needs to run most single statements. The intake, the outbox and the sender
run a few fixed statements per batch, thousands of times a second. A
:class:`Prepared` statement compiles its Core statement once per dialect,
keeps the column types' bind processors (JSON, timestamps) and runs it on
the DBAPI cursor of the caller's connection, inside the caller's
transaction. Everything else keeps using SQLAlchemy Core directly.

Rows come back as plain tuples: prepared queries select only columns the
driver returns as they are (text, numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

__all__ = ["Prepared"]

_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: bool
    processors: tuple[tuple[str, _Processor], ...]
    """Bind processors of the parameters that have one (JSON, timestamps)."""
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    """Positional styles: a row's parameters in the driver's order, unprocessed."""
    processed: tuple[tuple[int, _Processor], ...]
    """Positional styles: the positions that have a bind processor."""


class Prepared:
    """A Core statement run with the driver's ``execute`` / ``executemany``.

    ``statement`` names its parameters with ``bindparam`` (or, for INSERT and
    UPDATE, by the ``columns`` given, which become ``VALUES`` / ``SET``).
    """

    def __init__(self, statement: Executable, *, columns: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._columns = list(columns) if columns is not None else None
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            form = self._statement.compile(dialect=dialect, column_keys=self._columns)  # type: ignore[attr-defined]
            processors = []
            for name, bind in form.binds.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors.append((name, processor))
            by_name = dict(processors)
            order = tuple(form.positiontup or ())
            compiled = _Compiled(
                sql=form.string,
                positional=bool(form.positional),
                processors=tuple(processors),
                values=_getter(order),
                processed=tuple(
                    (index, by_name[name]) for index, name in enumerate(order) if name in by_name
                ),
            )
            self._compiled[dialect.name] = compiled
        return compiled

    def _parameter_rows(
        self, compiled: _Compiled, rows: Sequence[Mapping[str, Any]]
    ) -> Sequence[Any]:
        """The rows as the driver takes them, bind processors applied.

        A value shared by many rows (the batch's timestamp) is processed once.
        """
        done: dict[tuple[int, int], Any] = {}

        def process(index: int, processor: _Processor, value: Any) -> Any:
            key = (index, id(value))  # the rows keep every value alive meanwhile
            if key not in done:
                done[key] = processor(value)
            return done[key]

        if compiled.positional:
            if not compiled.processed:
                return [compiled.values(row) for row in rows]
            result = []
            for row in rows:
                values = list(compiled.values(row))
                for index, processor in compiled.processed:
                    values[index] = process(index, processor, values[index])
                result.append(values)
            return result
        if not compiled.processors:
            return list(rows)
        named = []
        for row in rows:
            copy = dict(row)
            for index, (name, processor) in enumerate(compiled.processors):
                if name in copy:
                    copy[name] = process(index, processor, copy[name])
            named.append(copy)
        return named

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row, in one driver call."""
        if not rows:
            return
        compiled = self._for(conn.dialect)
        with _cursor(conn, compiled.sql) as cursor:
            cursor.executemany(compiled.sql, self._parameter_rows(compiled, rows))

    def fetch(self, conn: Connection, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run the query once; its rows as plain tuples."""
        compiled = self._for(conn.dialect)
        with _cursor(conn, compiled.sql) as cursor:
            cursor.execute(compiled.sql, self._parameter_rows(compiled, [parameters])[0])
            return [tuple(row) for row in cursor.fetchall()]


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``row -> (row[name], ...)`` in C (``itemgetter``), always as a tuple."""
    if not names:
        return lambda row: ()
    if len(names) == 1:
        one = itemgetter(names[0])
        return lambda row: (one(row),)
    return itemgetter(*names)


@contextmanager
def _cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A driver cursor in the connection's transaction; driver errors become
    SQLAlchemy's (``OperationalError``, ``IntegrityError``...), as callers expect."""
    cursor = conn.connection.cursor()
    dbapi_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error) from exc
    finally:
        cursor.close()
