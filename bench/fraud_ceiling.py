"""How high card precision top-100 can go when fraud labels arrive 7 days late.

The backtest's card precision top-100 (the handbook's metric: each day, the 100
cards with the highest score; the share of them that had a fraud that day) is
estimated here without any model, three ways:

* **perfect**: every fraudulent card ranked first. No scorer reaches it: some
  frauds look exactly like genuine transactions when they happen.
* **seeable first, random filling**: every fraud that *some* decision-time
  signal points at ranked first, the rest of each day's 100 drawn at random from
  the remaining cards (mean over ``--draws`` drawings, with the 95th percentile
  of the drawings).
* **seeable first, filling by signals**: the same, but the rest of each day's
  100 ranked by two weak decision-time signals first: the card has a fraud
  whose label is already known, then the card's number of transactions that
  day (a card used more often has more chances to meet a compromised terminal).

A fraudulent test transaction counts as *seeable* when any of these holds at its
time ``t`` (everything a feature could know then, with labels ``--delay-days``
late):

1. its amount is above every genuine amount of the training window (a pattern
   the training labels show);
2. its amount is more than ``--ratio`` times its card's mean of earlier amounts;
3. its terminal has a fraud whose label is known by ``t`` inside the delayed
   30-day window ``(t - delay - 30 d, t - delay]``.

The test set is the backtest's: a card with a fraud on a day up to ``D - delay
- 1`` since the training window began is dropped from test day ``D``, as the
handbook does. A card whose fraud of day ``D - delay`` is already known at
decision time stays, and so does one whose known frauds are older than the
training window; the filling by signals uses that.

Everything else is *unseeable*: in the simulated data set, a compromised
terminal's transactions keep their normal amounts and customers (the handbook's
fraud scenario 2), so until the first label of the compromise is known nothing
marks them. This is an estimate, not a bound: it credits the seeable frauds for
free (no genuine card is ever ranked above them), which flatters it, and it
knows only the weak signals above for the rest, which may understate it. Run
with several ``--ratio`` values to see how much rule 2 moves it: the script also
prints, for the transactions that only a lower ratio catches, how often they
are fraud. A band whose fraud rate is no higher than that of the transactions no
rule points at carries no signal, and counting its frauds as seeable would
flatter the estimate.

    .venv/bin/python bench/fraud_ceiling.py \
        --data ../shared/data/fdh-transactions-2018-04-to-08.csv.gz
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Signals:
    """Per transaction: whether rule 2 or 3 points at it, and whether its card has a
    fraud whose label is known by then."""

    seen: npt.NDArray[np.bool_]
    card_known_fraud: npt.NDArray[np.bool_]


def seeable_signals(data: Transactions, *, delay_days: float, ratio: float) -> Signals:
    """The decision-time signals of every transaction, in one pass in time order."""
    n = len(data)
    seen = np.zeros(n, dtype=bool)
    card_known = np.zeros(n, dtype=bool)
    delay = delay_days * DAY
    window = TERMINAL_WINDOW_DAYS * DAY
    fraud = data.fraud.tolist()
    card_n: dict[Hashable, int] = {}
    card_sum: dict[Hashable, float] = {}
    card_first_fraud: dict[Hashable, float] = {}
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
        first = card_first_fraud.get(card)
        card_known[i] = first is not None and first <= known_until
        card_n[card] = k + 1
        card_sum[card] = s + amount
        if fraud[i]:
            card_first_fraud.setdefault(card, ts)
            terminal_frauds.setdefault(terminal, []).append(ts)
    return Signals(seen=seen, card_known_fraud=card_known)


def _largest_genuine(data: Transactions, amounts: npt.NDArray[np.float64]) -> float:
    """The largest genuine amount of the first training window (rule 1's bound)."""
    days = data.days
    start = _day(SPLITS[0][0])
    train = (days >= start) & (days <= start + 6) & (data.fraud == 0)
    return float(amounts[train].max())


def split_ceiling(
    data: Transactions,
    *,
    signals: Signals,
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
    seeable = y & (signals.seen[idx] | (amounts[idx] > genuine_max))
    d = days[idx]
    cards: Sequence[Hashable] = [data.customers[i] for i in idx.tolist()]
    # The filling by signals: a known card fraud first, then the day's transactions.
    per_card_day = Counter(zip(cards, d.tolist(), strict=True))
    n_today = np.array([per_card_day[k] for k in zip(cards, d.tolist(), strict=True)])
    weak = signals.card_known_fraud[idx] * 0.5 + np.minimum(n_today, 99) / 250.0

    def cp(scores: npt.NDArray[np.float64]) -> float:
        return metrics.card_precision_top_k(
            days=d, customers=cards, labels=y, scores=scores, k=100
        )[0]

    def jitter() -> npt.NDArray[np.float64]:
        return rng.random(len(idx)) * 0.001

    perfect = cp(y + 0.5 * jitter())
    filled = np.array([cp(seeable + 500.0 * jitter()) for _ in range(draws)])
    by_signals = np.array([cp(seeable + weak + jitter()) for _ in range(draws)])
    return {
        "test_transactions": float(len(idx)),
        "frauds": float(y.sum()),
        "unseeable_frauds": float((y & ~seeable).sum()),
        "perfect": perfect,
        "random_filling_mean": float(filled.mean()),
        "random_filling_p95": float(np.quantile(filled, 0.95)),
        "filling_by_signals_mean": float(by_signals.mean()),
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
    computed = [seeable_signals(data, delay_days=args.delay_days, ratio=r) for r in ratios]
    signals = [c.seen for c in computed]
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
    print(
        "\n| ratio | test | frauds | unseeable | perfect "
        "| seeable first, random filling (mean) | p95 | filling by signals (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for ratio, sig in zip(ratios, computed, strict=True):
        rng = np.random.default_rng(0)
        for train_start, test_start in SPLITS:
            r = split_ceiling(
                data,
                signals=sig,
                amounts=amounts,
                train_start=_day(train_start),
                test_start=_day(test_start),
                delay_days=args.delay_days,
                draws=args.draws,
                rng=rng,
            )
            print(
                f"| {ratio:g} | {test_start} | {r['frauds']:.0f} | {r['unseeable_frauds']:.0f} "
                f"| {r['perfect']:.3f} | {r['random_filling_mean']:.3f} "
                f"| {r['random_filling_p95']:.3f} | {r['filling_by_signals_mean']:.3f} |"
            )


if __name__ == "__main__":
    main()
