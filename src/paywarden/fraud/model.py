"""The risk model: gradient-boosted trees (LightGBM) over :mod:`paywarden.fraud.features`.

Trained offline (``paywarden fraud train`` / the backtest), saved as one JSON
artifact, loaded once at start. The artifact is plain data — the LightGBM model
text plus metadata — never a pickle, so loading a model file cannot run code.

**Risk score.** ``risk_score = min(99, floor(100 * p))`` where ``p`` is the model's
probability of fraud. The model is trained on the natural class balance with log
loss, so ``p`` is roughly calibrated: a score of 70 means about a 70 % chance of
fraud on the training distribution. Levels follow Radar: ``highest`` from 75,
``elevated`` from 65, ``normal`` below (both configurable).

**Reasons.** Each decision lists the features that pushed the score up most:
LightGBM's ``pred_contrib`` (TreeSHAP) gives every feature's additive
contribution to the log-odds; the reasons are the largest positive ones.

Scoring one transaction takes tens of microseconds: the live path calls
LightGBM's single-row "fast" prediction entry point, set up once per model, so a
payment does not pay for ``Booster.predict``'s per-call parsing of parameters
and its array checks (about 100 µs). Replay scores in batches
through :meth:`RiskModel.probabilities` — the feature vectors are the same ones
the live path computes one at a time.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

ARTIFACT_FORMAT: Final = "paywarden-fraud-model/1"

log = logging.getLogger("paywarden.fraud")

# From LightGBM's c_api.h.
_C_API_PREDICT_CONTRIB: Final = 3
_C_API_DTYPE_FLOAT64: Final = 1

#: Training settings used by the backtest and ``paywarden fraud train``. Chosen for
#: all weeks at once (see BENCHMARKS.md), not for the handbook's test week: 150 trees
#: of 7 leaves score as well as 300 of 15 on the mean of five weeks and predict about
#: four times faster (shallow trees stay in cache).
DEFAULT_PARAMS: Final[Mapping[str, Any]] = {
    "objective": "binary",
    "learning_rate": 0.06,
    "num_leaves": 7,
    "min_child_samples": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 0,
    "deterministic": True,
    "verbose": -1,
}
DEFAULT_ROUNDS: Final = 150

RiskLevel = Literal["normal", "elevated", "highest"]


class ModelError(Exception):
    """The model artifact is missing, malformed or does not fit the feature code."""


@dataclass(frozen=True, slots=True)
class RiskThresholds:
    """Score thresholds for the risk levels (Radar's defaults)."""

    elevated: int = 65
    highest: int = 75

    def __post_init__(self) -> None:
        if not 0 <= self.elevated <= self.highest <= 99:
            raise ValueError("thresholds must satisfy 0 <= elevated <= highest <= 99")

    def level(self, score: int) -> RiskLevel:
        if score >= self.highest:
            return "highest"
        if score >= self.elevated:
            return "elevated"
        return "normal"


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature's push on the score: its value and its contribution to the log-odds."""

    feature: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """The model's verdict on one transaction."""

    risk_score: int
    risk_level: RiskLevel
    probability: float
    reasons: tuple[Reason, ...] = field(default=())


def score_from_probability(p: float) -> int:
    return min(99, max(0, math.floor(100.0 * p)))


def scores_from_probabilities(p: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.clip(np.floor(100.0 * p), 0, 99).astype(np.int64)


class _SingleRowContributions:
    """TreeSHAP contributions of one row through LightGBM's fast single-row API.

    ``LGBM_BoosterPredictForMatSingleRowFastInit`` prepares the prediction
    configuration once; each call is then one C call into a preallocated
    buffer. The handle is not safe for concurrent use, hence the lock.
    """

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

        self._lib, self._check = _LIB, _safe_call
        self._n = n_features
        self._config = ctypes.c_void_p()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_C_API_PREDICT_CONTRIB),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._booster = booster  # the config points into it: keep it alive
        self._row = np.zeros(n_features, dtype=np.float64)
        self._out = np.zeros(n_features + 1, dtype=np.float64)
        self._row_ptr = self._row.ctypes.data_as(ctypes.c_void_p)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._lock = threading.Lock()

    def __call__(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with self._lock:
            self._row[:] = x
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._config, self._row_ptr, ctypes.byref(self._out_len), self._out_ptr
                )
            )
            if self._out_len.value != self._n + 1:
                raise ModelError("LightGBM returned an unexpected number of contributions")
            return self._out.copy()

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            self._lib.LGBM_FastConfigFree(config)


class RiskModel:
    """A trained booster with its feature names and metadata."""

    def __init__(
        self,
        *,
        booster: lgb.Booster,
        feature_names: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
        thresholds: RiskThresholds | None = None,
    ) -> None:
        if booster.num_feature() != len(feature_names):
            raise ModelError("the booster and the feature names disagree in length")
        self._booster = booster
        self.feature_names = tuple(feature_names)
        self.metadata = dict(metadata or {})
        self.thresholds = thresholds or RiskThresholds()
        self._fast: _SingleRowContributions | None = None
        try:
            self._fast = _SingleRowContributions(booster, len(self.feature_names))
        except (ImportError, AttributeError, lgb.basic.LightGBMError) as e:
            # A LightGBM without the entry point: Booster.predict gives the same numbers.
            log.warning("LightGBM fast single-row prediction unavailable: %s", e)

    # -- scoring ---------------------------------------------------------------

    # Prediction is single-threaded: per-transaction calls must not pay for a thread pool.

    def probabilities(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Fraud probabilities for a batch of feature rows (shape ``(n, n_features)``)."""
        out = self._booster.predict(x, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def contributions(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """TreeSHAP contributions per row, bias last, through ``Booster.predict``."""
        return np.asarray(
            self._booster.predict(x, pred_contrib=True, num_threads=1), dtype=np.float64
        )

    def assess(self, x: npt.NDArray[np.float64], *, n_reasons: int = 3) -> RiskAssessment:
        """Score one feature vector and explain it (the live path)."""
        row = np.asarray(x, dtype=np.float64).reshape(1, -1)
        contrib = self._fast(row[0]) if self._fast is not None else self.contributions(row)[0]
        logit = float(contrib.sum())  # feature contributions + bias = raw score
        p = 1.0 / (1.0 + math.exp(-logit))
        score = score_from_probability(p)
        parts = contrib[:-1]
        order = np.argsort(-parts, kind="stable")[:n_reasons]
        reasons = tuple(
            Reason(
                feature=self.feature_names[i],
                value=float(row[0, i]),
                contribution=float(parts[i]),
            )
            for i in order
            if parts[i] > 0
        )
        return RiskAssessment(
            risk_score=score,
            risk_level=self.thresholds.level(score),
            probability=p,
            reasons=reasons,
        )

    # -- persistence -----------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": ARTIFACT_FORMAT,
                "feature_names": list(self.feature_names),
                "metadata": self.metadata,
                "lightgbm_model": self._booster.model_to_string(),
            }
        )

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        expected_features: Sequence[str] | None = None,
        thresholds: RiskThresholds | None = None,
    ) -> RiskModel:
        try:
            doc = json.loads(text)
            if doc.get("format") != ARTIFACT_FORMAT:
                raise ModelError(f"not a {ARTIFACT_FORMAT} artifact")
            names = [str(n) for n in doc["feature_names"]]
            booster = lgb.Booster(model_str=str(doc["lightgbm_model"]))
            metadata = dict(doc.get("metadata") or {})
        except (ValueError, KeyError, TypeError, AttributeError, lgb.basic.LightGBMError) as e:
            raise ModelError(f"cannot load the risk model: {e}") from e
        if expected_features is not None and tuple(expected_features) != tuple(names):
            # The model must see exactly the features it was trained on.
            raise ModelError("the model was trained on other features than this code computes")
        return cls(booster=booster, feature_names=names, metadata=metadata, thresholds=thresholds)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        expected_features: Sequence[str] | None = None,
        thresholds: RiskThresholds | None = None,
    ) -> RiskModel:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ModelError(f"cannot read the risk model at {path}: {e}") from e
        return cls.from_json(text, expected_features=expected_features, thresholds=thresholds)


def train(
    *,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.int8] | npt.NDArray[np.bool_] | npt.NDArray[np.int64],
    feature_names: Sequence[str],
    params: Mapping[str, Any] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    num_threads: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> RiskModel:
    """Fit the booster on feature rows ``x`` and 0/1 labels ``y``.

    ``num_threads=0`` lets LightGBM use every core; the result is the same (the
    training is ``deterministic``).
    """
    labels = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != labels.shape[0] or x.shape[1] != len(feature_names):
        raise ValueError("x must be (n, len(feature_names)) and y must have n labels")
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("training needs both fraudulent and genuine transactions")
    p = dict(DEFAULT_PARAMS if params is None else params)
    p["num_threads"] = num_threads
    data = lgb.Dataset(x, label=labels, feature_name=list(feature_names), free_raw_data=True)
    booster = lgb.train(p, data, num_boost_round=rounds)
    meta = {"lightgbm": lgb.__version__, "params": p, "rounds": rounds, **(metadata or {})}
    return RiskModel(booster=booster, feature_names=feature_names, metadata=meta)
