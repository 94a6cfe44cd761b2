"""Labelled history out of the gateway, for training: reported labels feed the
next model (``paywarden fraud export`` then ``paywarden fraud train``).

Each authorized charge becomes one row with the columns the backtest and the
trainer read (``../shared/data/README.md``): the card fingerprint stands for the
customer, the merchant account for the terminal, the amount is in US dollars.
A charge is fraud (``tx_fraud=1``) when a ``fraudulent`` or ``dispute`` label
was reported for it *by the export's cut-off*; the label delay stays explicit
because the trainer itself hides labels younger than ``--delay-days``.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import IO

from sqlalchemy import select

from paywarden.db import Database
from paywarden.fraud.engine import USD_PER_UNIT, amount_in_usd_cents
from paywarden.fraud.models import FraudLabel
from paywarden.payments.models import Charge, PaymentMethod

COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud")


def labelled_rows(
    db: Database,
    *,
    livemode: bool,
    since: int = 0,
    until: int | None = None,
    rates: Mapping[str, Decimal] = USD_PER_UNIT,
) -> Iterator[tuple[str, str, str, str, str, int]]:
    """Authorized charges in time order with their fraud label as known now."""
    with db.read() as s:
        fraud = {
            str(cid)
            for (cid,) in s.execute(
                select(FraudLabel.charge_id).where(
                    FraudLabel.label.in_(("fraudulent", "dispute")),
                    FraudLabel.livemode == livemode,
                )
            )
        }
        q = (
            select(
                Charge.id,
                Charge.created,
                PaymentMethod.fingerprint,
                Charge.account_id,
                Charge.amount,
                Charge.currency,
            )
            .join(PaymentMethod, PaymentMethod.id == Charge.payment_method_id)
            .where(Charge.paid.is_(True), Charge.livemode == livemode, Charge.created >= since)
            .order_by(Charge.created, Charge.pk)
        )
        if until is not None:
            q = q.where(Charge.created <= until)
        for cid, created, fingerprint, account, amount, currency in s.execute(q):
            cents = amount_in_usd_cents(amount, currency, rates)
            if cents is None:
                continue
            when = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            yield (
                str(cid),
                when,
                str(fingerprint),
                str(account),
                f"{cents // 100}.{cents % 100:02d}",
                1 if cid in fraud else 0,
            )


def export_csv(
    db: Database,
    out: IO[str],
    *,
    livemode: bool = False,
    rates: Mapping[str, Decimal] = USD_PER_UNIT,
) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in labelled_rows(db, livemode=livemode, rates=rates):
        writer.writerow(row)
        n += 1
    return n
