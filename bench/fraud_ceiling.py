"""How high card precision top-100 can go when fraud labels arrive 7 days late.

The backtest's card precision top-100 (the handbook's metric: each day, the 100
cards with the highest score; the share of them that had a fraud that day) has
two ceilings:

* **perfect**: every fraudulent card ranked first. No scorer reaches it: some
  frauds look exactly like genuine transactions when they happen.
* **seeable first**: every fraud that *some* decision-time signal points at
  ranked first, the rest of the top 100 filled at random from the remaining
  cards (a scorer that cannot tell the unseeable frauds from genuine cards can
  do no better than chance there; the figure is the mean over ``--draws`` random
  fillings, with the 95th percentile).

A fraudulent test transaction counts as *seeable* when any of these holds at its
time ``t`` (everything a feature could know then, with labels ``--delay-days``
late):

1. its amount is above every genuine amount of the training window (a pattern
   the training labels show);
2. its amount is more than ``--ratio`` times its card's mean of earlier amounts;
3. its terminal has a fraud whose label is known by ``t`` inside the delayed
   30-day window ``(t - delay - 30 d, t - delay]``.

(A card with a fraud known since the training window began is not in the test
at all: the handbook drops it, and so does the backtest.)

Everything else is *unseeable*: in the simulated data set, a compromised
terminal's transactions keep their normal amounts and customers (the handbook's
fraud scenario 2), so until the first label of the compromise is known nothing
marks them. The seeable-first figure is an estimate of the best any scorer can
do under the label delay, not a proof: it assumes unseeable frauds carry no
signal at all, and it lets the seeable ones in for free (no genuine card is
ever ranked above them). Run with several ``--ratio`` values to see how much
the estimate depends on rule 2: the script also prints, for the transactions
that only a lower ratio catches, how often they are fraud. A band whose fraud
rate is no higher than that of the transactions no rule points at carries no
signal, and counting its frauds as seeable would flatter the ceiling.

    .venv/bin/python bench/fraud_ceiling.py \
        --data ../shared/data/fdh-transactions-2018-04-to-08.csv.gz
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from paywarden.fraud import metrics
from paywarden.fraud.backtest import Transactions, read_transactions
from paywarden.fraud.features import DAY

#: (train start, test start); each window is 7 days, as in BENCHMARKS.md.
SPLITS: tuple[tuple[str, str], ...] = (
    ("2018-07-11", "2018-07-25"),
    ("2018-07-18", "2018-08-01"),
    ("2018-07-25", "2018-08-08"),
    ("2018-08-01", "2018-08-15"),
    ("2018-08-08", "2018-08-22"),
)
TERMINAL_WINDOW_DAYS = 30.0


def _day(s: str) -> int:
    return (dt.date.fromisoformat(s) - dt.date(1970, 1, 1)).days


def seeable_signals(
    data: Transactions, *, delay_days: float, ratio: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Per transaction: whether rule 2 or 3 points at it, and its amount (for rule 1)."""
    n = len(data)
    seen = np.zeros(n, dtype=bool)
    delay = delay_days * DAY
    window = TERMINAL_WINDOW_DAYS * DAY
    fraud = data.fraud.tolist()
    card_n: dict[Hashable, int] = {}
    card_sum: dict[Hashable, float] = {}
    terminal_frauds: dict[Hashable, list[float]] = {}
    cols = zip(data.ts, data.customers, data.terminals, data.amounts, strict=True)
    for i, (ts, card, terminal, amount) in enumerate(cols):
        k = card_n.get(card, 0)
        s = card_sum.get(card, 0.0)
        known_until = ts - delay
        hit = k > 0 and s > 0 and amount * k > ratio * s
        frauds = terminal_frauds.get(terminal)
        if not hit and frauds:
            start = known_until - window
            # Newest first; the list is in time order.
            for q in reversed(frauds):
                if q <= start:
                    break
                if q <= known_until:
                    hit = True
                    break
        seen[i] = hit
        card_n[card] = k + 1
        card_sum[card] = s + amount
        if fraud[i]:
            terminal_frauds.setdefault(terminal, []).append(ts)
    return seen, np.asarray(data.amounts, dtype=np.float64)


def _largest_genuine(data: Transactions, amounts: npt.NDArray[np.float64]) -> float:
    """The largest genuine amount of the first training window (rule 1's bound)."""
    days = data.days
    start = _day(SPLITS[0][0])
    train = (days >= start) & (days <= start + 6) & (data.fraud == 0)
    return float(amounts[train].max())


def split_ceiling(
    data: Transactions,
    *,
    seen: npt.NDArray[np.bool_],
    amounts: npt.NDArray[np.float64],
    train_start: int,
    test_start: int,
    delay_days: int,
    draws: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    days = data.days
    train = (days >= train_start) & (days <= train_start + 6)
    test = (days >= test_start) & (days <= test_start + 6)
    y_all = data.fraud.astype(bool)
    genuine_max = float(amounts[train & ~y_all].max())
    drop = metrics.known_compromised_mask(
        days=days,
        customers=data.customers,
        labels=data.fraud,
        test_mask=test,
        train_start_day=train_start,
        delay_days=delay_days,
    )
    idx = np.flatnonzero(test & ~drop)
    y = y_all[idx]
    seeable = y & (seen[idx] | (amounts[idx] > genuine_max))
    d = days[idx]
    cards: Sequence[Hashable] = [data.customers[i] for i in idx.tolist()]

    def cp(scores: npt.NDArray[np.float64]) -> float:
        return metrics.card_precision_top_k(
            days=d, customers=cards, labels=y, scores=scores, k=100
        )[0]

    perfect = cp(y + rng.random(len(idx)) * 0.5)
    filled = np.array([cp(seeable + rng.random(len(idx)) * 0.5) for _ in range(draws)])
    return {
        "test_transactions": float(len(idx)),
        "frauds": float(y.sum()),
        "unseeable_frauds": float((y & ~seeable).sum()),
        "perfect": perfect,
        "seeable_first_mean": float(filled.mean()),
        "seeable_first_p95": float(np.quantile(filled, 0.95)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, action="append")
    ap.add_argument("--delay-days", type=int, default=7)
    ap.add_argument("--ratio", type=float, action="append", help="rule 2 (default 2)")
    ap.add_argument("--draws", type=int, default=50)
    args = ap.parse_args()

    data = read_transactions(args.data)
    ratios = sorted(args.ratio or [2.0])
    print(f"# {platform.node()} {platform.machine()} Python {platform.python_version()}")
    print(f"# {len(data):,} transactions, delay {args.delay_days} days, {args.draws} draws")
    signals = [seeable_signals(data, delay_days=args.delay_days, ratio=r)[0] for r in ratios]
    amounts = np.asarray(data.amounts, dtype=np.float64)
    days = data.days
    first, last = _day(SPLITS[0][1]), _day(SPLITS[-1][1]) + 6
    tested = (days >= first) & (days <= last) & (amounts <= _largest_genuine(data, amounts))
    y = data.fraud.astype(bool)
    print("\nTransactions of the test weeks with amounts in the genuine range:\n")
    print("| caught by rule 2 or 3 | transactions | frauds | fraud rate |")
    print("|---|---|---|---|")
    bands = [(f"no rule, ratio {ratios[0]:g}", tested & ~signals[0])]
    for i in range(len(ratios) - 1):
        label = f"only with ratio {ratios[i]:g}, not {ratios[i + 1]:g}"
        bands.append((label, tested & signals[i] & ~signals[i + 1]))
    bands.append((f"with ratio {ratios[-1]:g}", tested & signals[-1]))
    for label, m in bands:
        n = int(m.sum())
        rate = float(y[m].mean()) if n else 0.0
        print(f"| {label} | {n:,} | {int(y[m].sum()):,} | {rate:.4f} |")
    print("\n| ratio | test | frauds | unseeable | perfect | seeable first (mean) | p95 |")
    print("|---|---|---|---|---|---|---|")
    for ratio, seen in zip(ratios, signals, strict=True):
        rng = np.random.default_rng(0)
        for train_start, test_start in SPLITS:
            r = split_ceiling(
                data,
                seen=seen,
                amounts=amounts,
                train_start=_day(train_start),
                test_start=_day(test_start),
                delay_days=args.delay_days,
                draws=args.draws,
                rng=rng,
            )
            print(
                f"| {ratio:g} | {test_start} | {r['frauds']:.0f} | {r['unseeable_frauds']:.0f} "
                f"| {r['perfect']:.3f} | {r['seeable_first_mean']:.3f} "
                f"| {r['seeable_first_p95']:.3f} |"
            )


if __name__ == "__main__":
    main()
