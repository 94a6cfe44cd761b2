"""Replay throughput and per-decision latency of the fraud feature and scoring code.

Runs on one core: pin it with ``taskset -c 0``; LightGBM predicts single-threaded.

1. features only: every transaction of the data through ``FeatureState``
   (``score_and_record`` + labels after the delay), as the backtest does;
2. features + scoring: the same loop, the model scoring the feature rows in
   batches (the per-transaction feature code is unchanged);
3. decision latency: on the warm state, one transaction at a time as the gateway
   would — features, ``RiskModel.assess`` (score, level and reasons), update.

    taskset -c 0 .venv/bin/python bench/fraud_replay.py \
        --data ../shared/data/fdh-transactions-2018-04-to-08.csv.gz
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np

from paywarden.fraud.backtest import Windows, fit, read_transactions
from paywarden.fraud.features import DAY, FeatureState, Tx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--latency-samples", type=int, default=20_000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = read_transactions([args.data])
    t_read = time.perf_counter() - t0
    n = len(data)
    cols = list(zip(data.tx_ids, data.ts, data.customers, data.terminals, data.amounts,
                    strict=True))  # fmt: skip
    fraud = data.fraud.tolist()
    delay = 7 * DAY

    # A model trained the backtest's way (handbook split), to score with.
    windows = Windows(train_start=dt.date(2018, 7, 25), train_end=dt.date(2018, 7, 31),
                      test_start=None, test_end=None, delay_days=7)  # fmt: skip
    model, _, _, _ = fit(data, windows=windows, num_threads=1, quiet=True)

    def run(score: bool) -> float:
        state = FeatureState(delay_days=7)
        buf = np.empty((args.batch, state.n_features))
        k = 0
        start = time.perf_counter()
        for i, (tx_id, ts, c, term, amount) in enumerate(cols):
            tx = Tx(tx_id=tx_id, ts=ts, customer=c, terminal=term, amount=amount)
            state.score_and_record(tx, buf[k])
            k += 1
            if k == args.batch:
                if score:
                    model.probabilities(buf)
                k = 0
            if fraud[i]:
                state.add_label(tx_id, True, ts + delay)
        if score and k:
            model.probabilities(buf[:k])
        return n / (time.perf_counter() - start)

    feat_rate = run(score=False)
    full_rate = run(score=True)

    # Latency: warm the state on everything before 2018-08-08, then decide one at a time.
    cut = dt.datetime(2018, 8, 8, tzinfo=dt.UTC).timestamp()
    state = FeatureState(delay_days=7)
    warm = 0
    for i, (tx_id, ts, c, term, amount) in enumerate(cols):
        if ts >= cut:
            break
        state.update(Tx(tx_id=tx_id, ts=ts, customer=c, terminal=term, amount=amount))
        if fraud[i]:
            state.add_label(tx_id, True, ts + delay)
        warm = i + 1
    lat_full: list[float] = []
    lat_score: list[float] = []
    for tx_id, ts, c, term, amount in cols[warm : warm + args.latency_samples]:
        tx = Tx(tx_id=tx_id, ts=ts, customer=c, terminal=term, amount=amount)
        a = time.perf_counter()
        x = state.features(tx)
        model.assess(x)
        state.update(tx)
        b = time.perf_counter()
        model.probabilities(x.reshape(1, -1))
        e = time.perf_counter()
        lat_full.append((b - a) * 1e6)
        lat_score.append((e - b) * 1e6)

    def pct(v: list[float]) -> dict[str, float]:
        arr = np.asarray(v)
        return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 90, 99, 99.9)}

    print(json.dumps({
        "date": dt.datetime.now(tz=dt.UTC).date().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "transactions": n,
        "read_seconds": round(t_read, 2),
        "replay_features_tx_per_s": round(feat_rate),
        "replay_features_and_scoring_tx_per_s": round(full_rate),
        "batch": args.batch,
        "decision_latency_us": pct(lat_full),
        "single_score_latency_us": pct(lat_score),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
