"""paywarden.rows: Core reads and writes give exactly what the ORM gives, on
SQLite and PostgreSQL, and write only what they are asked to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, inspect, select

from paywarden import rows
from paywarden.db import Base, Database
from paywarden.events.models import Event
from paywarden.payments.models import PaymentIntent
from tests.conftest import pg_schema

_T = PaymentIntent.__table__
_BY_ID = select(_T).where(_T.c.id == bindparam("id"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'rows.db'}")
        Base.metadata.create_all(database.write_engine)
        yield database
        database.dispose()
        return
    with pg_schema() as url:
        database = Database(url)
        Base.metadata.create_all(database.write_engine)
        yield database
        database.dispose()


def intent(**kw: Any) -> PaymentIntent:
    values: dict[str, Any] = {
        "id": "pi_rows1",
        "account_id": "acct_1",
        "livemode": False,
        "created": 1_700_000_000,
        "amount": 1099,
        "currency": "usd",
        "status": "requires_confirmation",
        "capture_method": "automatic",
        "confirmation_method": "automatic",
        "metadata_": {"order": "42", "nested": {"a": [1, 2]}},
        "client_secret": "pi_rows1_secret_x",
        "risk": None,
    }
    values.update(kw)
    return PaymentIntent(**values)


def store(db: Database, **kw: Any) -> None:
    with db.write() as s:
        rows.insert_now(s, intent(**kw))


def reread(db: Database, pi_id: str = "pi_rows1") -> PaymentIntent | None:
    with db.read() as s:
        return rows.load(s, PaymentIntent, _BY_ID, {"id": pi_id})


def orm_columns(obj: Any) -> dict[str, Any]:
    return {a.key: getattr(obj, a.key) for a in inspect(type(obj)).column_attrs}


def test_insert_now_applies_defaults_and_load_matches_the_orm(db: Database) -> None:
    with db.write() as s:
        rows.insert_now(s, intent())
    with db.read() as s:
        orm = s.scalar(select(PaymentIntent).where(PaymentIntent.id == "pi_rows1"))
        assert orm is not None
        # Column defaults a flush would have given.
        assert (orm.version, orm.amount_received, orm.amount_capturable) == (0, 0, 0)
        assert isinstance(orm.pk, int)
        core = rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_rows1"})
    assert core is not None
    assert orm_columns(core) == orm_columns(orm)
    assert core.metadata_ == {"order": "42", "nested": {"a": [1, 2]}}
    assert core.livemode is False
    assert inspect(core).transient  # not attached to any session


def test_load_of_a_missing_row_is_none(db: Database) -> None:
    with db.read() as s:
        assert rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_none"}) is None


def test_update_now_writes_only_the_named_attributes(db: Database) -> None:
    store(db)
    with db.write() as s:
        pi = rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_rows1"})
        assert pi is not None
        pi.status = "processing"
        pi.version += 1
        pi.risk = {"score": 12, "reasons": ["a"]}
        pi.amount = 1  # changed in memory, not named: must not be written
        rows.update_now(s, pi, ("status", "version", "risk"))
    got = reread(db)
    assert got is not None
    assert (got.status, got.version, got.risk) == ("processing", 1, {"score": 12, "reasons": ["a"]})
    assert got.amount == 1099


def test_changing_a_loaded_row_writes_nothing_by_itself(db: Database) -> None:
    store(db)
    with db.write() as s:
        pi = rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_rows1"})
        assert pi is not None
        pi.status = "canceled"
    got = reread(db)
    assert got is not None and got.status == "requires_confirmation"


def test_update_of_a_vanished_row_fails_and_rolls_back(db: Database) -> None:
    store(db)
    pi = reread(db)
    assert pi is not None
    pi.pk = 10**9
    pi.status = "succeeded"

    def write() -> None:
        with db.write() as s:
            rows.insert_now(s, intent(id="pi_rows2", client_secret="pi_rows2_secret_x"))
            rows.update_now(s, pi, ("status",))

    with pytest.raises(RuntimeError, match="not updated"):
        write()
    with db.read() as s:
        assert rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_rows2"}) is None


def test_writes_roll_back_with_the_transaction(db: Database) -> None:
    def write() -> None:
        with db.write() as s:
            rows.insert_now(s, intent())
            rows.insert_now(
                s,
                Event(
                    id="evt_rows",
                    account_id="acct_1",
                    livemode=False,
                    created=1,
                    type="x",
                    api_version="v",
                    data={},
                ),
            )
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        write()
    with db.read() as s:
        assert rows.load(s, PaymentIntent, _BY_ID, {"id": "pi_rows1"}) is None
        assert s.scalar(select(Event.id)) is None


def test_the_connection_is_asked_again_for_each_transaction(db: Database) -> None:
    # A session reused after commit runs in a new transaction on a (possibly)
    # different connection: the cached one must not be used.
    with db.write() as s:
        rows.insert_now(s, intent())
    session = db._write()
    try:
        with session.begin():
            first = rows.load(session, PaymentIntent, _BY_ID, {"id": "pi_rows1"})
        with session.begin():
            assert session.get_transaction() is not None
            second = rows.load(session, PaymentIntent, _BY_ID, {"id": "pi_rows1"})
            conn = session.connection()
            assert session.info[rows._INFO_KEY][1] is conn
    finally:
        session.close()
    assert first is not None and second is not None


def test_a_rolled_back_savepoint_takes_its_core_writes_with_it(db: Database) -> None:
    with db.write() as s:
        rows.insert_now(s, intent())  # the connection is cached for the transaction
        sp = s.begin_nested()
        rows.insert_now(s, intent(id="pi_rows2", client_secret="pi_rows2_secret_x"))
        sp.rollback()
        rows.insert_now(s, intent(id="pi_rows3", client_secret="pi_rows3_secret_x"))
    with db.read() as s:
        found = [
            rows.load(s, PaymentIntent, _BY_ID, {"id": i})
            for i in ("pi_rows1", "pi_rows2", "pi_rows3")
        ]
    assert [p is not None for p in found] == [True, False, True]
