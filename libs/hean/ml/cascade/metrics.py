"""Scores for probability forecasts of a rare event, and the naive baselines they must beat."""

from __future__ import annotations

import math

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

THRESHOLDS = (0.2, 0.3, 0.5, 0.7)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean forecast vs observed frequency per probability bin (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "n": int(sel.sum()),
                    "mean_p": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                }
            )
    return out


def score(y: np.ndarray, p: np.ndarray, thresholds=THRESHOLDS) -> dict[str, object]:
    """AUC, Brier, log loss, precision/recall at thresholds, reliability; y is 0/1."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    both = 0 < y.sum() < len(y)
    at: dict[str, dict[str, float | int | None]] = {}
    for th in thresholds:
        fire = p >= th
        tp = int((fire & (y == 1)).sum())
        at[f"{th:g}"] = {
            "fired": int(fire.sum()),
            "precision": tp / int(fire.sum()) if fire.any() else None,
            "recall": tp / int(y.sum()) if y.any() else None,
        }
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()) if len(y) else math.nan,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "at_threshold": at,
        "reliability": reliability(y, p),
    }


def _isotonic(x: np.ndarray, y: np.ndarray) -> IsotonicRegression | None:
    ok = np.isfinite(x)
    if not ok.any():
        return None
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
    return iso.fit(x[ok], y[ok])


class Baselines:
    """Naive forecasts fitted on the training period only.

    climatology: the training base rate for every row. persistence: the training frequency of
    a cascade following a known cascade vs a known quiet spell. volatility: isotonic map of the
    trailing return volatility to a cascade frequency (high volatility, more big moves).
    momentum (when given): isotonic map of the absolute recent return, the "it is already
    moving" forecast.
    """

    def __init__(
        self, y: np.ndarray, prev: np.ndarray, vol: np.ndarray, momentum: np.ndarray | None = None
    ) -> None:
        y = np.asarray(y, dtype=float)
        self.rate = float(y.mean())
        prev = np.asarray(prev, dtype=float)
        self.after = {
            k: float(y[prev == k].mean()) if (prev == k).any() else self.rate for k in (0, 1)
        }
        self.iso = _isotonic(np.asarray(vol, dtype=float), y)
        self.iso_momentum = (
            None if momentum is None else _isotonic(np.asarray(momentum, dtype=float), y)
        )

    def _map(self, iso: IsotonicRegression | None, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        v = np.full(len(x), self.rate)
        ok = np.isfinite(x)
        if iso is not None and ok.any():
            v[ok] = iso.predict(x[ok])
        return v

    def predict(
        self, prev: np.ndarray, vol: np.ndarray, momentum: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        prev = np.asarray(prev, dtype=float)
        pers = np.where(prev == 1, self.after[1], np.where(prev == 0, self.after[0], self.rate))
        out = {
            "climatology": np.full(len(prev), self.rate),
            "persistence": pers,
            "volatility": self._map(self.iso, vol),
        }
        if momentum is not None and self.iso_momentum is not None:
            out["momentum"] = self._map(self.iso_momentum, momentum)
        return out
