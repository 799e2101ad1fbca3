"""The cascade model artifact and inference.

Artifact (one directory): ``model.joblib`` (the calibrated scikit-learn classifier over the
classes none/down/up) and ``meta.json`` (version, feature set and features, label rule,
leverage buckets, cluster settings, bar length, data kind and span, split, metrics). The
probability of a cascade is ``1 - P(none)``; its direction is the likelier of down and up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.cascade.features import ClusterConfig
from hean.ml.cascade.featuresets import feature_set
from hean.ml.cascade.labels import DOWN, NONE, UP
from hean.ml.cascade.tiers import LeverageBucket, from_meta

META = "meta.json"
WEIGHTS = "model.joblib"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "cascade"
"""The daily model trained on real data: what liquidation-predictor loads unless told."""
INTRADAY_DIR = DEFAULT_DIR.with_name("cascade_intraday")
"""The intraday model trained on simulator markets (``model_dir`` to use it)."""


class ModelLoadError(RuntimeError):
    """No loadable cascade artifact; the message says what is missing or broken."""


def find_artifact(path: str | Path) -> Path:
    """The artifact in ``path``, or the newest one among its subdirectories."""
    p = Path(path)
    if (p / META).exists():
        return p
    found = sorted(
        (d for d in p.glob("*") if (d / META).exists()), key=lambda d: (d / META).stat().st_mtime
    )
    if not found:
        raise ModelLoadError(f"{p}: no {META} here or in a subdirectory")
    return found[-1]


@dataclass(frozen=True)
class Prediction:
    probability: float
    p_down: float
    p_up: float

    @property
    def direction(self) -> str:
        if self.p_down == self.p_up:
            return "none"
        return "down" if self.p_down > self.p_up else "up"


def class_probs(clf, x: np.ndarray) -> np.ndarray:
    """Columns none/down/up whatever subset of classes the classifier saw."""
    raw = clf.predict_proba(x)
    out = np.zeros((len(x), 3))
    for j, c in enumerate(clf.classes_):
        out[:, int(c)] = raw[:, j]
    return out


class CascadeModel:
    def __init__(self, clf, meta: dict) -> None:
        self.clf = clf
        self.meta = meta
        self.version: str = meta["version"]
        self.features: list[str] = list(meta["features"])
        try:
            self.feature_set = feature_set(meta.get("feature_set", "daily"))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        if tuple(self.features) != self.feature_set.features:
            raise ModelLoadError(
                f"artifact features {self.features} differ from this code's "
                f"{self.feature_set.name} set {list(self.feature_set.features)}"
            )
        self.buckets: list[LeverageBucket] = from_meta(meta["leverage_buckets"])
        self.cluster = ClusterConfig(**meta["cluster"])
        self.bar_ms: int = int(meta["bar_ms"])
        self.min_bars: int = int(meta.get("min_bars", 2))
        self.book_depth: int = int(meta.get("book_depth", 10))
        """Levels the book imbalance is measured over (intraday set)."""

    @property
    def intraday(self) -> bool:
        return self.feature_set.name == "intraday"

    @classmethod
    def load(cls, path: str | Path) -> CascadeModel:
        import joblib

        d = find_artifact(path)
        try:
            meta = json.loads((d / META).read_text())
            clf = joblib.load(d / WEIGHTS)
        except (OSError, ValueError, EOFError) as exc:
            raise ModelLoadError(f"{d}: cannot load: {exc}") from None
        except Exception as exc:  # unpickling errors come in many types
            raise ModelLoadError(f"{d}: cannot unpickle {WEIGHTS}: {exc}") from None
        missing = [
            k
            for k in ("version", "features", "leverage_buckets", "cluster", "bar_ms")
            if k not in meta
        ]
        if missing:
            raise ModelLoadError(f"{d / META}: missing {missing}")
        return cls(clf, meta)

    def features_of(self, bars: pd.DataFrame) -> pd.DataFrame:
        return self.feature_set.compute(bars, self.bar_ms, self.buckets, self.cluster)

    def predict_rows(self, x: np.ndarray) -> list[Prediction]:
        p = class_probs(self.clf, np.asarray(x, dtype=float))
        return [Prediction(float(1.0 - r[NONE]), float(r[DOWN]), float(r[UP])) for r in p]

    def predict_latest(self, bars: pd.DataFrame) -> Prediction | None:
        """Prediction for the newest bar of one symbol; None with too little history."""
        if len(bars) < self.min_bars:
            return None
        f = self.features_of(bars)
        return self.predict_rows(f.iloc[[-1]].to_numpy(float))[0]
