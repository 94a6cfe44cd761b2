"""End to end: the backtest and train commands on a small synthetic data set."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from paywarden.fraud.backtest import backtest_main, read_transactions, train_main
from paywarden.fraud.features import FeatureState
from paywarden.fraud.model import ModelError, RiskModel

HEADER = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"]
WINDOWS = [
    "--train-start", "2018-04-15", "--train-end", "2018-04-21",
    "--test-start", "2018-04-29", "--test-end", "2018-05-05",
    "--delay-days", "7",
]  # fmt: skip


def _rows(n: int = 4000, seed: int = 7) -> list[list[str]]:
    """~40 days of transactions: large amounts and two compromised terminals are fraud."""
    rng = random.Random(seed)
    start = dt.datetime(2018, 4, 1, tzinfo=dt.UTC)
    means = {c: rng.uniform(5, 100) for c in range(80)}
    rows = []
    for i in range(n):
        t = start + dt.timedelta(seconds=int(i * 40 * 86400 / n) + rng.randrange(30))
        c = rng.randrange(80)
        term = rng.randrange(40)
        amount = max(0.5, rng.gauss(means[c], means[c] / 2))
        if rng.random() < 0.02:
            amount *= 5
        day = (t - start).days
        fraud = amount > 220 or (term in (3, 4) and day >= 5)
        rows.append(
            [str(i), t.strftime("%Y-%m-%d %H:%M:%S"), str(c), str(term), f"{amount:.2f}",
             "1" if fraud else "0"]
        )  # fmt: skip
    return rows


def _write(path: Path, rows: list[list[str]], *, gz: bool = False) -> Path:
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("fdh") / "tx.csv", _rows())


def test_backtest_json(data_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backtest_main(["--data", str(data_file), *WINDOWS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("auc_roc", "average_precision", "card_precision_top_100"):
        assert 0.0 <= out[key] <= 1.0
    assert set(out["thresholds"]) == {"elevated", "highest"}
    assert out["test"]["frauds"] > 0
    assert out["auc_roc"] > 0.8  # large amounts and compromised terminals are learnable


def test_backtest_text_and_split_gzip_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows()
    a = _write(tmp_path / "a.csv.gz", rows[::2], gz=True)
    b = _write(tmp_path / "b.csv", rows[1::2])
    assert backtest_main(["--data", str(a), "--data", str(b), *WINDOWS]) == 0
    text = capsys.readouterr().out
    assert "card precision top-100" in text
    assert "AUC ROC" in text


def test_merged_files_are_in_time_order(tmp_path: Path) -> None:
    rows = _rows(200)
    data = read_transactions(
        [_write(tmp_path / "a.csv", rows[1::2]), _write(tmp_path / "b.csv", rows[::2])]
    )
    assert data.ts == sorted(data.ts)
    assert len(data) == 200


def test_bad_windows_fail_cleanly(data_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data", str(data_file), *WINDOWS]
    args[args.index("--test-start") + 1] = "2018-04-25"  # labels of training not known yet
    assert backtest_main(args) == 1
    assert "delay" in capsys.readouterr().err


def test_bad_column_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("transaction_id,tx_datetime\n1,2018-04-01 00:00:00\n")
    assert backtest_main(["--data", str(p), *WINDOWS]) == 1
    assert "missing columns" in capsys.readouterr().err


def test_train_writes_a_loadable_artifact(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    args = ["--data", str(data_file), "--train-start", "2018-04-15", "--train-end", "2018-04-21"]
    assert train_main([*args, "--out", str(out)]) == 0
    names = FeatureState().names
    model = RiskModel.load(out, expected_features=names)
    x = np.zeros(len(names))
    x[names.index("amount")] = 900.0
    a = model.assess(x)
    assert 0 <= a.risk_score <= 99
    assert a.risk_level in {"normal", "elevated", "highest"}
    assert all(r.contribution > 0 for r in a.reasons)
    batch = model.probabilities(np.vstack([x, x]))
    assert batch.shape == (2,)
    assert batch[0] == pytest.approx(a.probability)


def test_artifact_for_other_features_is_refused(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    args = ["--data", str(data_file), "--train-start", "2018-04-15", "--train-end", "2018-04-21"]
    assert train_main([*args, "--out", str(out)]) == 0
    with pytest.raises(ModelError, match="other features"):
        RiskModel.load(out, expected_features=("amount",))
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ModelError):
        RiskModel.load(tmp_path / "junk.json")


def test_live_scoring_matches_booster_predict() -> None:
    """The single-row fast path gives exactly Booster.predict's contributions
    (the shipped model, rows with large, zero and missing values)."""
    from paywarden.fraud.engine import DEFAULT_MODEL_PATH

    names = FeatureState().names
    model = RiskModel.load(DEFAULT_MODEL_PATH, expected_features=names)
    assert model._fast is not None
    rng = np.random.default_rng(3)
    rows = rng.random((200, len(names))) * rng.choice([1.0, 30.0, 5000.0], size=(200, len(names)))
    rows[::5, 0] = np.nan
    rows[::7] = 0.0
    expected = model.contributions(rows)
    for row, want in zip(rows, expected, strict=True):
        assert np.array_equal(model._fast(row), want)
        a = model.assess(row)
        assert a.probability == pytest.approx(1 / (1 + np.exp(-want.sum())))


def test_rules_on_velocity_counters_see_the_live_counters(
    data_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [
        "Review if :total_charges_per_card_number_weekly: >= 1",  # every payment counts itself
        "Review if :total_charges_per_card_number_daily: > 2",
        "Block if :card_count_for_ip_address_hourly: > 0",  # the data has no IP addresses
        "Block if :amount_in_usd: > 220",
    ]
    argv = ["--data", str(data_file), *WINDOWS, "--json"]
    for rule in rules:
        argv += ["--rule", rule]
    assert backtest_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    matched = {r["rule"]: r["matched"] for r in out["rules"]}
    n = out["test"]["transactions"]
    assert matched[rules[0]] == n
    assert 0 < matched[rules[1]] < n
    assert matched[rules[2]] == 0
    assert 0 < matched[rules[3]] < n
