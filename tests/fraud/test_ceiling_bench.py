"""``bench/fraud_ceiling.py``: which frauds count as seeable under the label delay."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from paywarden.fraud.backtest import Transactions
from paywarden.fraud.features import DAY

_PATH = Path(__file__).resolve().parents[2] / "bench" / "fraud_ceiling.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fraud_ceiling", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fraud_ceiling", module)
    spec.loader.exec_module(module)
    return module


def _data(rows: list[tuple[float, str, str, float, int]]) -> Transactions:
    return Transactions(
        tx_ids=list(range(len(rows))),
        ts=[r[0] * DAY for r in rows],
        customers=[r[1] for r in rows],
        terminals=[r[2] for r in rows],
        amounts=[r[3] for r in rows],
        fraud=np.array([r[4] for r in rows], dtype=np.int8),
    )


def test_a_terminal_fraud_is_seen_only_once_its_label_is_known_and_inside_the_window() -> None:
    bench = _bench()
    data = _data(
        [
            (0.0, "a", "T", 10.0, 1),  # the terminal's first fraud
            (6.5, "b", "T", 10.0, 1),  # label of day 0 not known yet (delay 7)
            (7.5, "c", "T", 10.0, 1),  # known now, inside (t - 37 d, t - 7 d]
            (40.0, "d", "T", 10.0, 1),  # window (3, 33]: days 6.5 and 7.5 are in it
            (80.0, "e", "T", 10.0, 1),  # window (43, 73]: no fraud in it
        ]
    )
    seen = bench.seeable_signals(data, delay_days=7, ratio=2.0).seen
    assert seen.tolist() == [False, False, True, True, False]


def test_an_amount_far_above_the_cards_own_mean_is_seen() -> None:
    bench = _bench()
    data = _data(
        [
            (0.0, "a", "T1", 10.0, 0),
            (1.0, "a", "T2", 12.0, 0),
            (2.0, "a", "T3", 22.0, 1),  # 22 / 11 = 2.0: not above the ratio
            (3.0, "a", "T4", 60.0, 1),  # 60 / 14.67 > 2
        ]
    )
    seen = bench.seeable_signals(data, delay_days=7, ratio=2.0).seen
    assert seen.tolist() == [False, False, False, True]


def test_a_cards_fraud_counts_as_known_once_its_label_has_arrived() -> None:
    bench = _bench()
    data = _data(
        [
            (0.0, "a", "T1", 10.0, 1),
            (3.0, "a", "T2", 10.0, 0),  # the label of day 0 arrives on day 7
            (7.5, "a", "T3", 10.0, 0),
            (8.0, "b", "T4", 10.0, 0),  # another card: nothing known
        ]
    )
    known = bench.seeable_signals(data, delay_days=7, ratio=2.0).card_known_fraud
    assert known.tolist() == [False, False, True, False]
