"""Backtest metrics against small hand-computed examples."""

from __future__ import annotations

import pytest

from paywarden.fraud import metrics


def test_auc_hand_example() -> None:
    # scikit-learn's roc_auc_score docstring example: 3 of 4 positive/negative pairs ordered.
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_ties_count_half() -> None:
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.roc_auc([0, 0, 1], [0.2, 0.5, 0.5]) == pytest.approx(0.75)


def test_average_precision_hand_example() -> None:
    # scikit-learn's average_precision_score docstring example: 0.8333...
    assert metrics.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)


def test_average_precision_ties_form_one_threshold() -> None:
    # One threshold holding both: precision 1/2 at recall 1.
    assert metrics.average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.average_precision([1, 0, 1], [0.9, 0.5, 0.1]) == pytest.approx(
        0.5 * 1.0 + 0.5 * (2 / 3)
    )


def test_metrics_reject_one_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        metrics.average_precision([0, 0], [0.1, 0.2])


def test_card_precision_top_k_groups_by_card_and_removes_detected() -> None:
    # Day 0: card a (fraud, max 0.9), b (genuine 0.8), c (fraud 0.1). k=2 -> a, b -> 1/2.
    # Day 1: a is detected and removed; b 0.7 genuine, c 0.6 fraud, d 0.5 -> b, c -> 1/2.
    days = [0, 0, 0, 0, 1, 1, 1, 1]
    cards = ["a", "a", "b", "c", "a", "b", "c", "d"]
    labels = [0, 1, 0, 1, 1, 0, 1, 0]
    scores = [0.9, 0.2, 0.8, 0.1, 0.99, 0.7, 0.6, 0.5]
    mean, per_day = metrics.card_precision_top_k(
        days=days, customers=cards, labels=labels, scores=scores, k=2
    )
    assert per_day == [0.5, 0.5]
    assert mean == pytest.approx(0.5)
    # Without removal, day 1's top-2 is a (fraud) and b -> still 1/2; with k=3: a, b, c -> 2/3.
    _, per_day3 = metrics.card_precision_top_k(
        days=days,
        customers=cards,
        labels=labels,
        scores=scores,
        k=3,
        remove_detected_compromised_cards=False,
    )
    assert per_day3 == [pytest.approx(2 / 3), pytest.approx(2 / 3)]


def test_card_precision_divides_by_k_even_with_fewer_cards() -> None:
    mean, _ = metrics.card_precision_top_k(
        days=[0, 0], customers=[1, 2], labels=[1, 0], scores=[0.5, 0.4], k=100
    )
    assert mean == pytest.approx(0.01)


def test_known_compromised_follows_the_handbook_split() -> None:
    # Training starts on day 10, delay 7: a test transaction on day D is dropped when its
    # card had a fraud on a day in [10, D - 8].
    days = [9, 10, 15, 25, 26, 26]
    cards = ["old", "x", "y", "x", "y", "old"]
    labels = [1, 1, 1, 0, 0, 0]
    test = [False, False, False, True, True, True]
    drop = metrics.known_compromised_mask(
        days=days,
        customers=cards,
        labels=labels,
        test_mask=test,
        train_start_day=10,
        delay_days=7,
    )
    # x: fraud day 10 <= 25-8 -> dropped. y: fraud day 15 > 26-8=18? no, 15 <= 18 -> dropped.
    # old: fraud before training start -> kept.
    assert drop.tolist() == [False, False, False, True, True, False]


def test_at_threshold() -> None:
    m = metrics.at_threshold([0, 0, 1, 1], [10, 70, 80, 20], threshold=65)
    assert (m.flagged, m.precision, m.recall, m.false_positive_rate) == (2, 0.5, 0.5, 0.5)
