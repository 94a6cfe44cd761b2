"""Value list membership on its own: how items are stored, how a payment's
values are looked up, items stored before matching was case-insensitive, and
one query per payment."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from paywarden.core.errors import InvalidRequestError
from paywarden.db import Database
from paywarden.fraud import admin
from paywarden.fraud.models import ValueListItem
from paywarden.fraud.velocity import normalize_email


def _make_list(db: Database, alias: str, item_type: str, *values: str) -> str:
    with db.write() as s:
        vl = admin.create_list(
            s, account_id="acct_1", livemode=False, now=1, actor="test",
            alias=alias, name=alias, item_type=item_type, metadata={},
        )  # fmt: skip
        for value in values:
            admin.add_item(s, vl=vl, value=value, now=1, actor="test")
        return vl.id


def _store_raw(db: Database, list_id: str, value: str) -> None:
    """An item exactly as an older version stored it, bypassing normalize_item."""
    with db.write() as s:
        s.add(
            ValueListItem(
                id=f"rsli_{abs(hash(value))}", account_id="acct_1", livemode=False,
                created=1, value_list_id=list_id, value=value, created_by="test",
            )
        )  # fmt: skip


def _hits(db: Database, *values: str) -> dict[str, set[str]]:
    with db.read() as s:
        return admin.list_hits(s, account_id="acct_1", livemode=False, values=values)


@pytest.mark.parametrize(
    ("item_type", "given_value", "stored"),
    [
        ("string", "  cus_GLJjilAbc ", "cus_gljjilabc"),
        ("case_sensitive_string", "cus_GLJjilAbc", "cus_GLJjilAbc"),
        ("customer_id", "cus_GLJjilAbc", "cus_GLJjilAbc"),
        ("card_fingerprint", "EFC968327FF9450E", "efc968327ff9450e"),
        ("card_bin", "424242", "424242"),
        ("country", "us", "US"),
        ("ip_address", "2001:DB8:0::1", "2001:db8::1"),
        ("email", "Fraudster@Example.com", "fraudster@example.com"),
        ("email", "John.Doe+x@GoogleMail.com", "johndoe@gmail.com"),
    ],
)
def test_items_are_stored_in_the_form_they_are_matched_in(
    item_type: str, given_value: str, stored: str
) -> None:
    assert admin.normalize_item(item_type, given_value) == stored
    assert stored in admin.match_keys(item_type, given_value)


@pytest.mark.parametrize(
    ("item_type", "value"),
    [("ip_address", "nope"), ("ip_address", "fe80::1%eth0"), ("country", "USA"),
     ("card_bin", "42"), ("email", "nobody"), ("string", "  ")],
)  # fmt: skip
def test_invalid_items_are_refused(item_type: str, value: str) -> None:
    with pytest.raises(InvalidRequestError):
        admin.normalize_item(item_type, value)
    if item_type != "card_bin":  # a short "BIN" is looked up, and found in no list
        assert admin.match_keys(item_type, value) == ()


_TEXT = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[A-Za-z0-9._+]{1,12}@(gmail|GoogleMail|example)\.(com|COM)", fullmatch=True),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(_TEXT)
def test_the_lookup_covers_every_type_and_every_stored_form(value: str) -> None:
    forms = set(admin.lookup_forms(value))
    for item_type in admin.ITEM_TYPES:
        keys = admin.match_keys(item_type, value)
        assert set(keys) <= forms, item_type
        try:
            stored = admin.normalize_item(item_type, value)
        except InvalidRequestError:
            continue
        # A valid item matches the very value it was made from.
        assert stored in keys, item_type


def test_a_payment_matches_items_of_every_type_whatever_the_case(db: Database) -> None:
    _make_list(db, "trusted", "string", "cus_GLJjilAbc", "US")
    _make_list(db, "exact", "case_sensitive_string", "cus_gljjilabc")
    _make_list(db, "customers", "customer_id", "cus_GLJjilAbc")
    _make_list(db, "cards", "card_fingerprint", "EFC968327FF9450E")
    _make_list(db, "countries", "country", "us")
    _make_list(db, "emails", "email", "John.Doe+x@gmail.com")
    _make_list(db, "ips", "ip_address", "2001:db8::1")
    hits = _hits(
        db, "cus_GLJjilAbc", "US", "efc968327ff9450e", "johndoe@gmail.com", "2001:DB8::1", "x"
    )
    # The sets hold the payment's values as given: what the rules compare.
    assert hits == {
        "trusted": {"cus_GLJjilAbc", "US"},
        "customers": {"cus_GLJjilAbc"},
        "cards": {"efc968327ff9450e"},
        "countries": {"US"},
        "emails": {"johndoe@gmail.com"},
        "ips": {"2001:DB8::1"},
    }
    # Only the exact spelling is in a case-sensitive list.
    assert _hits(db, "cus_gljjilabc")["exact"] == {"cus_gljjilabc"}


def test_items_stored_by_earlier_versions_still_match(db: Database) -> None:
    # Fingerprints and non-Gmail emails were stored as given / lowercased.
    cards = _make_list(db, "cards", "card_fingerprint")
    _store_raw(db, cards, "efc968327ff9450e")
    _store_raw(db, cards, "AbCdEf0123456789")  # a mixed-case one kept as given
    emails = _make_list(db, "emails", "email")
    _store_raw(db, emails, "fraudster@example.com")
    strings = _make_list(db, "strings", "string")
    _store_raw(db, strings, "cus_gljjilabc")
    hits = _hits(
        db, "efc968327ff9450e", "AbCdEf0123456789", "fraudster@example.com", "cus_GLJjilAbc"
    )
    assert hits == {
        "cards": {"efc968327ff9450e", "AbCdEf0123456789"},
        "emails": {"fraudster@example.com"},
        "strings": {"cus_GLJjilAbc"},
    }


def test_a_gmail_item_matches_the_payment_email_as_the_engine_normalizes_it(
    db: Database,
) -> None:
    _make_list(db, "emails", "email", "John.Doe+x@gmail.com")
    for address in ("johndoe@gmail.com", "J.O.H.N.Doe+shop@googlemail.com"):
        email = normalize_email(address)  # what the engine puts in :email:
        assert _hits(db, email) == {"emails": {email}}
    assert _hits(db, normalize_email("jane.doe@gmail.com")) == {}


def test_a_payments_values_are_looked_up_in_one_query(db: Database) -> None:
    _make_list(db, "trusted", "string", "cus_GLJjilAbc")
    values = [
        "usd", "US", "424242", "visa", "credit", "efc968327ff9450e", "cus_GLJjilAbc",
        "johndoe@gmail.com", "gmail.com", "203.0.113.7", "FR",
        "dev_0123456789abcdef01234567", "chrome/macos", "en", "normal",
    ]  # fmt: skip
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    with db.read() as s:
        s.connection()  # begin outside the count
        event.listen(db.read_engine, "before_cursor_execute", count)
        try:
            hits = admin.list_hits(s, account_id="acct_1", livemode=False, values=values)
        finally:
            event.remove(db.read_engine, "before_cursor_execute", count)
    assert hits == {"trusted": {"cus_GLJjilAbc"}}
    assert len(statements) == 1, statements
