"""Backtest and offline training of the risk model on labelled history.

``paywarden fraud backtest`` (:func:`backtest_main`) reads labelled transactions
(the columns of the Fraud Detection Handbook's simulated data set:
``transaction_id, tx_datetime, customer_id, terminal_id, tx_amount, tx_fraud``;
plain CSV or gzip), replays them in time order through the live feature code
(:class:`paywarden.fraud.features.FeatureState`), each fraud label becoming
visible ``--delay-days`` after its transaction, trains the model on the training
window and scores the test window. The replay starts at the first transaction of
the data, so the 30-day windows are warm when the training window begins.

The evaluation follows the handbook (``get_train_test_set`` and
``performance_assessment``, see :mod:`paywarden.fraud.metrics`): test
transactions of cards already known to be compromised are dropped, then AUC ROC,
average precision and card precision top-100 are computed, plus precision,
recall and false-positive rate at the ``elevated`` and ``highest`` risk-score
thresholds. The training labels must all be known before the test starts:
``test_start > train_end + delay_days``.

``paywarden fraud train`` (:func:`train_main`) does the training part only and
writes the model artifact that the server loads at start.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import numpy as np
import numpy.typing as npt

from paywarden.fraud import metrics
from paywarden.fraud.features import DAY, FeatureState, Tx
from paywarden.fraud.model import (
    DEFAULT_ROUNDS,
    RiskModel,
    RiskThresholds,
    scores_from_probabilities,
    train,
)

COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud")
_PROGRESS_MIN_ROWS = 200_000


class DataError(Exception):
    """The labelled data cannot be read or does not cover the requested windows."""


@dataclass(frozen=True, slots=True)
class Transactions:
    """Labelled transactions in time order (parallel columns)."""

    tx_ids: list[Hashable]
    ts: list[float]
    customers: list[Hashable]
    terminals: list[Hashable]
    amounts: list[float]
    fraud: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def days(self) -> npt.NDArray[np.int64]:
        """UTC day numbers (days since 1970-01-01)."""
        return (np.asarray(self.ts, dtype=np.float64) // DAY).astype(np.int64)


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _ident(v: str) -> Hashable:
    return int(v) if v.isdigit() else v


class _Clock:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) to epoch seconds, caching each date."""

    def __init__(self) -> None:
        self._days: dict[str, float] = {}

    def __call__(self, s: str) -> float:
        if len(s) == 19 and s[10] in " T" and s[13] == ":" and s[16] == ":":
            base = self._days.get(s[:10])
            if base is None:
                d = dt.date.fromisoformat(s[:10])
                base = self._days[s[:10]] = float((d - dt.date(1970, 1, 1)).days) * DAY
            return base + int(s[11:13]) * 3600 + int(s[14:16]) * 60 + int(s[17:19])
        t = dt.datetime.fromisoformat(s)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return t.timestamp()


def read_transactions(paths: Sequence[Path]) -> Transactions:
    """Read and merge labelled CSV files (plain or gzip), sorted by time (stable)."""
    ids: list[Hashable] = []
    ts: list[float] = []
    customers: list[Hashable] = []
    terminals: list[Hashable] = []
    amounts: list[float] = []
    fraud: list[int] = []
    clock = _Clock()
    for path in paths:
        try:
            with _open_text(path) as f:
                reader = csv.reader(f)
                header = [h.strip().lower() for h in next(reader, [])]
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise DataError(f"{path}: missing columns {', '.join(missing)}")
                i_id, i_ts, i_c, i_t, i_a, i_f = (header.index(c) for c in COLUMNS)
                for line, row in enumerate(reader, start=2):
                    if not row:
                        continue
                    try:
                        ids.append(_ident(row[i_id]))
                        ts.append(clock(row[i_ts]))
                        customers.append(_ident(row[i_c]))
                        terminals.append(_ident(row[i_t]))
                        amounts.append(float(row[i_a]))
                        label = row[i_f].strip()
                        if label not in ("0", "1"):
                            raise ValueError(f"tx_fraud must be 0 or 1, not {label!r}")
                        fraud.append(int(label))
                    except (ValueError, IndexError) as e:
                        raise DataError(f"{path}:{line}: {e}") from e
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from e
    order = np.argsort(np.asarray(ts, dtype=np.float64), kind="stable")
    if np.any(order[1:] < order[:-1]):
        o = order.tolist()
        ids = [ids[i] for i in o]
        ts = [ts[i] for i in o]
        customers = [customers[i] for i in o]
        terminals = [terminals[i] for i in o]
        amounts = [amounts[i] for i in o]
        fraud = [fraud[i] for i in o]
    return Transactions(
        tx_ids=ids,
        ts=ts,
        customers=customers,
        terminals=terminals,
        amounts=amounts,
        fraud=np.asarray(fraud, dtype=np.int8),
    )


def replay(
    data: Transactions,
    state: FeatureState,
    *,
    keep: npt.NDArray[np.bool_],
    stop: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> npt.NDArray[np.float64]:
    """Feed ``data[:stop]`` through ``state`` in time order, as the live path would.

    Every transaction is recorded; the feature vectors of those where ``keep`` is
    True are returned (one row each, in order). A fraud label becomes known
    ``state.delay_days`` after its transaction.
    """
    n = len(data) if stop is None else stop
    out = np.empty((int(np.count_nonzero(keep[:n])), state.n_features), dtype=np.float64)
    delay = state.delay_days * DAY
    fraud = data.fraud.tolist()
    keep_l = keep[:n].tolist()
    row = 0
    cols = zip(data.tx_ids, data.ts, data.customers, data.terminals, data.amounts, strict=True)
    for i, (tx_id, ts, customer, terminal, amount) in enumerate(cols):
        if i >= n:
            break
        tx = Tx(tx_id=tx_id, ts=ts, customer=customer, terminal=terminal, amount=amount)
        if keep_l[i]:
            state.score_and_record(tx, out[row])
            row += 1
        else:
            state.update(tx)
        if fraud[i]:
            state.add_label(tx_id, True, ts + delay)
        if on_progress is not None and i % 16384 == 16383:
            on_progress(16384)
    return out


# -- backtest --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Windows:
    train_start: dt.date
    train_end: dt.date
    test_start: dt.date | None
    test_end: dt.date | None
    delay_days: int

    def check(self) -> None:
        if self.train_end < self.train_start:
            raise DataError("--train-end is before --train-start")
        if self.delay_days < 0:
            raise DataError("--delay-days must not be negative")
        if self.test_start is None or self.test_end is None:
            return
        if self.test_end < self.test_start:
            raise DataError("--test-end is before --test-start")
        if (self.test_start - self.train_end).days <= self.delay_days:
            # Otherwise the model would be trained on labels nobody knows yet at test time.
            raise DataError("the test must start more than --delay-days after --train-end")


def _day(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


@contextlib.contextmanager
def _progress(n: int, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for long replays; yields its updater (or None)."""
    if quiet or n < _PROGRESS_MIN_ROWS or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=n, label="replaying", file=sys.stderr) as bar:
        yield bar.update


def fit(
    data: Transactions,
    *,
    windows: Windows,
    num_threads: int = 0,
    quiet: bool = False,
) -> tuple[RiskModel, FeatureState, npt.NDArray[np.float64] | None, npt.NDArray[np.bool_]]:
    """Replay, train on the training window; return the model, the state after the
    replay, the test feature rows (when a test window is given) and the test mask."""
    windows.check()
    days = data.days
    train_mask = (days >= _day(windows.train_start)) & (days <= _day(windows.train_end))
    if windows.test_start is not None and windows.test_end is not None:
        test_mask = (days >= _day(windows.test_start)) & (days <= _day(windows.test_end))
        last_day = _day(windows.test_end)
    else:
        test_mask = np.zeros(len(days), dtype=bool)
        last_day = _day(windows.train_end)
    if not train_mask.any():
        raise DataError("no transactions in the training window")
    if windows.test_start is not None and not test_mask.any():
        raise DataError("no transactions in the test window")
    stop = int(np.searchsorted(days, last_day, side="right"))
    state = FeatureState(delay_days=windows.delay_days)
    keep = train_mask | test_mask
    with _progress(stop, quiet) as update:
        rows = replay(data, state, keep=keep, stop=stop, on_progress=update)
    kept = keep[:stop]
    x_train = rows[train_mask[:stop][kept]]
    y_train = data.fraud[:stop][train_mask[:stop]]
    model = train(
        x=x_train,
        y=y_train,
        feature_names=state.names,
        num_threads=num_threads,
        rounds=DEFAULT_ROUNDS,
        metadata={
            "train_start": windows.train_start.isoformat(),
            "train_end": windows.train_end.isoformat(),
            "delay_days": windows.delay_days,
            "windows_days": list(state.windows_days),
            "n_train": len(y_train),
            "n_train_fraud": int(y_train.sum()),
        },
    )
    x_test = rows[test_mask[:stop][kept]] if test_mask.any() else None
    return model, state, x_test, test_mask


def run_backtest(
    data: Transactions,
    *,
    windows: Windows,
    thresholds: RiskThresholds | None = None,
    num_threads: int = 0,
    quiet: bool = False,
    rules: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The backtest; returns the metrics as a JSON-ready dictionary.

    ``rules`` (rule texts; default: the engine's built-in rules) are evaluated
    on every test transaction to report what each would have done, velocity
    counters included (per card). The data set carries no IP address, device
    or email, so rules on those, and counters per IP, device or email, match
    nothing.
    """
    if windows.test_start is None or windows.test_end is None:
        raise DataError("a backtest needs a test window")
    th = thresholds or RiskThresholds()
    model, _, x_test, test_mask = fit(data, windows=windows, num_threads=num_threads, quiet=quiet)
    assert x_test is not None
    days = data.days
    drop = metrics.known_compromised_mask(
        days=days,
        customers=data.customers,
        labels=data.fraud,
        test_mask=test_mask,
        train_start_day=_day(windows.train_start),
        delay_days=windows.delay_days,
    )
    idx = np.flatnonzero(test_mask)
    kept = ~drop[idx]
    idx = idx[kept]
    p = model.probabilities(x_test[kept])
    y = data.fraud[idx]
    if y.sum() == 0 or y.sum() == len(y):
        raise DataError("the test window needs both fraudulent and genuine transactions")
    customers = [data.customers[i] for i in idx.tolist()]
    cp, cp_days = metrics.card_precision_top_k(
        days=days[idx], customers=customers, labels=y, scores=p, k=100
    )
    scores = scores_from_probabilities(p)
    at: dict[str, Any] = {}
    for level, t in (("elevated", th.elevated), ("highest", th.highest)):
        m = metrics.at_threshold(y, scores, threshold=t)
        at[level] = {
            "threshold": t,
            "flagged": m.flagged,
            "precision": m.precision,
            "recall": m.recall,
            "false_positive_rate": m.false_positive_rate,
        }
    rule_report = _rules_report(rules, data=data, idx=idx, scores=scores, labels=y, th=th)
    return {
        "rules": rule_report,
        "auc_roc": metrics.roc_auc(y, p),
        "average_precision": metrics.average_precision(y, p),
        "card_precision_top_100": cp,
        "card_precision_top_100_per_day": cp_days,
        "thresholds": at,
        "delay_days": windows.delay_days,
        "train": {
            "start": windows.train_start.isoformat(),
            "end": windows.train_end.isoformat(),
            "transactions": model.metadata["n_train"],
            "frauds": model.metadata["n_train_fraud"],
        },
        "test": {
            "start": windows.test_start.isoformat(),
            "end": windows.test_end.isoformat(),
            "transactions": len(y),
            "frauds": int(y.sum()),
            "dropped_known_compromised": int(drop.sum()),
        },
    }


def _rules_report(
    rules: Sequence[str] | None,
    *,
    data: Transactions,
    idx: npt.NDArray[np.int64],
    scores: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int8],
    th: RiskThresholds,
) -> list[dict[str, Any]]:
    """What each rule would have done on the test rows ``idx`` (in time order).

    A rule on velocity counters sees the live counters (:mod:`velocity`), fed
    with every transaction from a week before the test window on (the longest
    window), each counted as authorized: the data set records no declines. A
    card stands for both the card and the customer.
    """
    from decimal import Decimal

    from paywarden.fraud.engine import DEFAULT_RULES
    from paywarden.fraud.rules import evaluate, parse_rule
    from paywarden.fraud.rules_api import attribute_types
    from paywarden.fraud.velocity import (
        RETENTION_SECONDS,
        MemoryVelocityStore,
        PaymentEvent,
        counter_names,
    )

    texts = list(rules) if rules else [src for _, src in DEFAULT_RULES]
    parsed = [parse_rule(text, attribute_types=attribute_types()) for text in texts]
    # Only the card's and customer's charge and amount counters can count
    # anything here (the data has no IP, device, email, decline or block):
    # feeding the store for the others (the built-in rules) would be wasted.
    counters = [
        n
        for n in counter_names()
        if ("_card_number_" in n or "_customer_" in n)
        and not n.startswith(("declined_", "blocked_"))
        and any(f":{n}:" in r.source for r in parsed)
    ]
    hits = np.zeros((len(parsed), len(labels)), dtype=bool)
    if not len(labels):
        return []
    first = int(idx[0])
    start = first
    if counters:
        begin = data.ts[first] - RETENTION_SECONDS
        while start > 0 and data.ts[start - 1] >= begin:
            start -= 1
    store = MemoryVelocityStore(sweep_every=RETENTION_SECONDS) if counters else None
    row_of = {int(i): j for j, i in enumerate(idx.tolist())}
    for i in range(start if counters else first, int(idx[-1]) + 1):
        j = row_of.get(i)
        card = str(data.customers[i])
        cents = round(data.amounts[i] * 100)
        snapshot: dict[str, int] = {}
        if store is not None:
            event = PaymentEvent(
                at=data.ts[i],
                amount_minor=cents,
                currency="usd",
                amount_usd_minor=cents,
                outcome="authorized",
                card=card,
                customer=card,
            )
            if j is None:
                store.record(event)
                continue
            snapshot = store.record_and_snapshot(event)
        if j is None:
            continue
        score = int(scores[j])
        attrs: dict[str, Any] = {
            **{n: snapshot[n] for n in counters if n in snapshot},
            "amount": cents,
            "amount_in_usd": Decimal(cents) / 100,
            "currency": "usd",
            "customer": card,
            "card_fingerprint": card,
            "risk_score": score,
            "risk_level": th.level(score),
        }
        for r, rule in enumerate(parsed):
            hits[r, j] = evaluate(rule, attributes=attrs)
    out = []
    frauds = int(labels.sum())
    genuine = len(labels) - frauds
    for i, rule in enumerate(parsed):
        h = hits[i]
        tp = int((h & (labels == 1)).sum())
        fp = int((h & (labels == 0)).sum())
        out.append(
            {
                "rule": rule.source,
                "action": rule.action,
                "matched": int(h.sum()),
                "frauds_matched": tp,
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / frauds if frauds else 0.0,
                "false_positive_rate": fp / genuine if genuine else 0.0,
            }
        )
    return out


def format_report(r: dict[str, Any]) -> str:
    tr, te = r["train"], r["test"]
    lines = [
        f"train {tr['start']}..{tr['end']}: {tr['transactions']:,} transactions, "
        f"{tr['frauds']:,} frauds; label delay {r['delay_days']} days",
        f"test  {te['start']}..{te['end']}: {te['transactions']:,} transactions, "
        f"{te['frauds']:,} frauds ({te['dropped_known_compromised']:,} transactions of "
        "cards already known compromised left out)",
        "",
        f"AUC ROC                 {r['auc_roc']:.3f}",
        f"average precision       {r['average_precision']:.3f}",
        f"card precision top-100  {r['card_precision_top_100']:.3f}",
        "",
        "risk level  score >=  flagged  precision  recall  false-positive rate",
    ]
    for level, m in r["thresholds"].items():
        lines.append(
            f"{level:<10}  {m['threshold']:>8}  {m['flagged']:>7,}  {m['precision']:>9.3f}  "
            f"{m['recall']:>6.3f}  {m['false_positive_rate']:>19.5f}"
        )
    if r.get("rules"):
        lines += ["", "what each rule would have done (matched, frauds, precision, recall, FPR):"]
        for m in r["rules"]:
            lines.append(
                f"  {m['matched']:>7,}  {m['frauds_matched']:>6,}  {m['precision']:>6.3f}  "
                f"{m['recall']:>6.3f}  {m['false_positive_rate']:>8.5f}  {m['rule']}"
            )
    return "\n".join(lines)


# -- command lines -----------------------------------------------------------------

_DATE = click.DateTime(formats=["%Y-%m-%d"])
_data_option = click.option(
    "--data",
    "data_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Labelled transactions (CSV or CSV.gz); repeat for several files.",
)


def _date(v: dt.datetime) -> dt.date:
    return v.date()


@click.command("backtest")
@_data_option
@click.option("--train-start", required=True, type=_DATE, help="First training day (inclusive).")
@click.option("--train-end", required=True, type=_DATE, help="Last training day (inclusive).")
@click.option("--test-start", required=True, type=_DATE, help="First test day (inclusive).")
@click.option("--test-end", required=True, type=_DATE, help="Last test day (inclusive).")
@click.option(
    "--delay-days",
    default=7,
    show_default=True,
    type=click.IntRange(min=0),
    help="Days until a fraud label becomes known.",
)
@click.option(
    "--elevated",
    default=65,
    show_default=True,
    type=click.IntRange(0, 99),
    help="Risk score from which a payment is 'elevated' (review).",
)
@click.option(
    "--highest",
    default=75,
    show_default=True,
    type=click.IntRange(0, 99),
    help="Risk score from which a payment is 'highest' (block).",
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    help="A rule to report on (repeatable); default: the built-in rules.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def _backtest_command(
    data_files: tuple[Path, ...],
    train_start: dt.datetime,
    train_end: dt.datetime,
    test_start: dt.datetime,
    test_end: dt.datetime,
    delay_days: int,
    elevated: int,
    highest: int,
    rules: tuple[str, ...],
    as_json: bool,
) -> None:
    """Replay labelled history through the live feature code, train, and score a test window."""
    try:
        thresholds = RiskThresholds(elevated=elevated, highest=highest)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    windows = Windows(
        train_start=_date(train_start),
        train_end=_date(train_end),
        test_start=_date(test_start),
        test_end=_date(test_end),
        delay_days=delay_days,
    )
    try:
        windows.check()
        data = read_transactions(data_files)
        from paywarden.fraud.rules import RuleSyntaxError, parse_rule
        from paywarden.fraud.rules_api import attribute_types

        for text in rules:
            try:
                parse_rule(text, attribute_types=attribute_types())
            except RuleSyntaxError as e:
                raise click.UsageError(f"--rule {text!r}: {e}") from e
        report = run_backtest(data, windows=windows, thresholds=thresholds, rules=rules)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(format_report(report))


@click.command("train")
@_data_option
@click.option("--train-start", required=True, type=_DATE, help="First training day (inclusive).")
@click.option("--train-end", required=True, type=_DATE, help="Last training day (inclusive).")
@click.option(
    "--delay-days",
    default=7,
    show_default=True,
    type=click.IntRange(min=0),
    help="Days until a fraud label becomes known.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the model artifact (JSON).",
)
def _train_command(
    data_files: tuple[Path, ...],
    train_start: dt.datetime,
    train_end: dt.datetime,
    delay_days: int,
    out: Path,
) -> None:
    """Train the risk model on labelled history and write the artifact the server loads."""
    windows = Windows(
        train_start=_date(train_start),
        train_end=_date(train_end),
        test_start=None,
        test_end=None,
        delay_days=delay_days,
    )
    try:
        windows.check()
        data = read_transactions(data_files)
        model, _, _, _ = fit(data, windows=windows)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    model.save(out)
    click.echo(
        f"wrote {out}: {model.metadata['n_train']:,} transactions, "
        f"{model.metadata['n_train_fraud']:,} frauds, {len(model.feature_names)} features"
    )


def _run(command: click.Command, argv: list[str] | None) -> int:
    try:
        command.main(args=argv, prog_name=f"paywarden fraud {command.name}", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return 0


def backtest_main(argv: list[str] | None = None) -> int:
    """``paywarden fraud backtest``; returns the exit status."""
    return _run(_backtest_command, argv)


def train_main(argv: list[str] | None = None) -> int:
    """``paywarden fraud train``; returns the exit status."""
    return _run(_train_command, argv)


#: The click commands themselves, for wiring under ``paywarden fraud``.
backtest_command = _backtest_command
train_command = _train_command
