"""Backtest metrics, as the Fraud Detection Handbook defines them.

Reference: Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning
for Credit Card Fraud Detection — Practical Handbook* (ULB, 2022), chapter 4
("Threshold-free metrics", "Precision top-k metrics") and the book's
``shared_functions`` (``performance_assessment``, ``card_precision_top_k``,
``card_precision_top_k_day``, ``get_train_test_set``).

* AUC ROC and average precision are scikit-learn's ``roc_auc_score`` and
  ``average_precision_score`` (the handbook calls those); they are computed here
  with numpy, ties handled the same way (tied scores form one threshold).
* Card precision top-k (:func:`card_precision_top_k`): for each day of the test
  period, group the day's transactions by card (customer), take each card's
  maximum score and maximum label, rank the cards by score and take the ``k``
  first; the day's precision is the number of fraudulent cards among them over
  ``k``. Cards found fraudulent in the top-k of an earlier test day are removed
  from later days (``remove_detected_compromised_cards=True``, the default in
  ``performance_assessment``). The result is the mean over days.
* Known-compromised cards (:func:`known_compromised_mask`): before scoring, the
  handbook drops from each test day the transactions of cards already known to be
  compromised, i.e. with a fraud from the first training day up to
  ``test day - delay - 1`` (``get_train_test_set``).

Ties in card ranking are broken by card id (ascending); the handbook leaves them to
pandas' unstable sort.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _check(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError("y_true and y_score differ in length")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y_true must be 0/1")
    return y, s


def roc_auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    y, s = _check(y_true, y_score)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC ROC needs both classes")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # mid-rank of each run of equal scores
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    ends = np.r_[starts[1:], len(s)]
    mid = (starts + ends + 1) / 2.0  # 1-based mid-rank
    ranks[order] = np.repeat(mid, ends - starts)
    u = float(ranks[y == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n, as scikit-learn."""
    y, s = _check(y_true, y_score)
    n_pos = float(y.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores = one threshold
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = np.cumsum(y_sorted)[last]
    predicted = last + 1.0
    precision = tp / predicted
    recall = tp / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def known_compromised_mask(
    *,
    days: npt.ArrayLike,
    customers: Sequence[Hashable],
    labels: npt.ArrayLike,
    test_mask: npt.ArrayLike,
    train_start_day: int,
    delay_days: int,
) -> npt.NDArray[np.bool_]:
    """Which test transactions belong to a card already known to be compromised.

    ``days`` are integer day numbers (UTC); a test transaction on day ``D`` is
    dropped when its card has a fraud on a day in ``[train_start_day, D - delay - 1]``
    (the handbook's ``get_train_test_set``). Returns True for transactions to drop.
    """
    d = np.asarray(days, dtype=np.int64)
    y = np.asarray(labels).astype(bool)
    test = np.asarray(test_mask).astype(bool)
    cust: list[Hashable] = list(customers)
    first_fraud_day: dict[Hashable, int] = {}
    for i in np.flatnonzero(y & (d >= train_start_day)):
        c = cust[i]
        day = int(d[i])
        if c not in first_fraud_day or day < first_fraud_day[c]:
            first_fraud_day[c] = day
    drop = np.zeros(len(d), dtype=bool)
    for i in np.flatnonzero(test):
        ff = first_fraud_day.get(cust[i])
        if ff is not None and ff <= int(d[i]) - delay_days - 1:
            drop[i] = True
    return drop


def card_precision_top_k(
    *,
    days: npt.ArrayLike,
    customers: Sequence[Hashable],
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    k: int = 100,
    remove_detected_compromised_cards: bool = True,
) -> tuple[float, list[float]]:
    """Mean daily card precision top-k, and the per-day values (handbook definition)."""
    if k <= 0:
        raise ValueError("k must be positive")
    d = np.asarray(days, dtype=np.int64)
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    cust: list[Hashable] = list(customers)
    if not (len(d) == len(y) == len(s) == len(cust)):
        raise ValueError("inputs differ in length")
    detected: set[Hashable] = set()
    per_day: list[float] = []
    for day in np.unique(d):
        best: dict[Hashable, tuple[float, bool]] = {}
        for i in np.flatnonzero(d == day):
            c = cust[i]
            if c in detected:
                continue
            prev = best.get(c)
            if prev is None:
                best[c] = (float(s[i]), bool(y[i]))
            else:
                best[c] = (max(prev[0], float(s[i])), prev[1] or bool(y[i]))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], _sort_key(kv[0])))
        top = [c for c, (_, fraud) in ranked[:k] if fraud]
        per_day.append(len(top) / k)
        if remove_detected_compromised_cards:
            detected.update(top)
    mean = float(np.mean(per_day)) if per_day else 0.0
    return mean, per_day


def _sort_key(c: Hashable) -> tuple[int, int | str]:
    if isinstance(c, int | np.integer):
        return (0, int(c))
    return (1, str(c))


@dataclass(frozen=True, slots=True)
class ThresholdMetrics:
    """Confusion-matrix rates at one score threshold (``score >= threshold`` flags)."""

    threshold: float
    flagged: int
    precision: float
    recall: float
    false_positive_rate: float


def at_threshold(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, threshold: float
) -> ThresholdMetrics:
    y, s = _check(y_true, y_score)
    flag = s >= threshold
    pos = y == 1
    tp = int(np.sum(flag & pos))
    fp = int(np.sum(flag & ~pos))
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    return ThresholdMetrics(
        threshold=threshold,
        flagged=tp + fp,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / n_pos if n_pos else 0.0,
        false_positive_rate=fp / n_neg if n_neg else 0.0,
    )
