"""Row-level reads and writes for the hot money-moving transactions.

The ORM's unit of work costs far more than the SQL it runs: loading an intent
through the session (identity map, instance state, loader callables) takes
about 250 µs on SQLite, and flushing an insert or an update another 100-200 µs
each, against 20-50 µs for the same statement through Core. The confirm path
runs a dozen of them per payment, so it uses these helpers instead:

* :func:`load` reads one row with a Core ``SELECT`` and returns it as a
  *transient* instance of the mapped class: the same attributes the rest of the
  code reads and renders, but not attached to any session, so changing it
  writes nothing by itself.
* :func:`insert_now` writes a new (transient) instance with a Core ``INSERT`` now,
  in the caller's transaction; unset attributes take their column defaults, as
  a flush would give them.
* :func:`update_now` writes the named attributes of an instance with a Core
  ``UPDATE … WHERE pk = …``.

The statements are the mapped tables' own, so types (JSON, booleans) convert
exactly as through the ORM, on SQLite and PostgreSQL alike. They run in the
session's transaction: they commit or roll back with everything else in it.
Callers must not mix these with ORM-tracked instances of the same rows in one
transaction (the session would not see the Core writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Executable, Table, bindparam, insert, inspect
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

_M = TypeVar("_M")
_INFO_KEY = "paywarden.rows.connection"


class _Shape:
    """A mapped class's table and its attribute ↔ column names, worked out once."""

    def __init__(self, cls: type[Any]) -> None:
        mapper = inspect(cls)
        self.table: Table = mapper.local_table
        # (attribute name, column key): ``metadata_`` is stored as ``metadata``.
        self.pairs = tuple((p.key, p.columns[0].key) for p in mapper.column_attrs)
        self.column_of = dict(self.pairs)
        self.new_instance = mapper.class_manager.new_instance
        self.insert = insert(self.table)
        self._updates: dict[tuple[str, ...], Executable] = {}

    def update(self, attrs: tuple[str, ...]) -> Executable:
        stmt = self._updates.get(attrs)
        if stmt is None:
            t = self.table
            stmt = (
                sa_update(t)
                .where(t.c.pk == bindparam("_pk"))
                .values({self.column_of[a]: bindparam(f"_v_{a}") for a in attrs})
            )
            self._updates[attrs] = stmt
        return stmt


_SHAPES: dict[type[Any], _Shape] = {}


def shape(cls: type[Any]) -> _Shape:
    sh = _SHAPES.get(cls)
    if sh is None:
        sh = _SHAPES[cls] = _Shape(cls)
    return sh


def _connection(session: Session) -> Connection:
    """The session's connection for its current transaction. ``Session.connection()``
    costs about 15 µs a call; the hot path asks a dozen times per transaction, so
    the answer is kept in ``session.info`` together with the transaction it
    belongs to, and asked again once that transaction is over."""
    # The innermost transaction: inside a savepoint, session.connection() is
    # what emits the SAVEPOINT, so a connection cached outside it must not be used.
    txn = session.get_nested_transaction() or session.get_transaction()
    cached = session.info.get(_INFO_KEY)
    if txn is not None and cached is not None and cached[0] is txn:
        conn: Connection = cached[1]
        return conn
    conn = session.connection()  # begins the transaction (or savepoint) if need be
    if txn is None:
        txn = session.get_nested_transaction() or session.get_transaction()
    session.info[_INFO_KEY] = (txn, conn)
    return conn


def from_row(cls: type[_M], row: Mapping[Any, Any]) -> _M:
    """A transient ``cls`` holding a row's values (keyed by column).

    Built as the ORM's own loader builds instances (``new_instance``, then the
    values straight into the instance dict): the constructor would fire an
    attribute event per column, a third of the cost of a load."""
    sh = shape(cls)
    obj: _M = sh.new_instance()
    d = obj.__dict__
    for attr, col in sh.pairs:
        d[attr] = row[col]
    return obj


def load(session: Session, cls: type[_M], stmt: Executable, params: Mapping[str, Any]) -> _M | None:
    """Run ``stmt`` (a ``select`` of ``cls``'s table) and return its first row
    as a transient instance, or None."""
    row = _connection(session).execute(stmt, params).mappings().first()
    return None if row is None else from_row(cls, row)


def insert_now(session: Session, obj: Any) -> None:
    """INSERT a transient instance now. Attributes never set take their column
    defaults, and an unset ``pk`` its autoincrement, as a flush would do."""
    sh = shape(type(obj))
    state = obj.__dict__
    values = {col: state[attr] for attr, col in sh.pairs if attr in state}
    if values.get("pk", 0) is None:
        del values["pk"]
    _connection(session).execute(sh.insert, values)


def update_now(session: Session, obj: Any, attrs: tuple[str, ...]) -> None:
    """UPDATE the named attributes of ``obj``'s row (found by its ``pk``)."""
    sh = shape(type(obj))
    params = {f"_v_{a}": getattr(obj, a) for a in attrs}
    params["_pk"] = obj.pk
    result = _connection(session).execute(sh.update(attrs), params)
    if result.rowcount != 1:
        raise RuntimeError(f"{sh.table.name}: row {obj.pk} was not updated")
