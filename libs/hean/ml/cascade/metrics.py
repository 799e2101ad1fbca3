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


class Baselines:
    """Naive forecasts fitted on the training period only.

    climatology: the training base rate for every row. persistence: the training frequency of
    a cascade following a cascade bar vs a quiet bar. volatility: isotonic map of the trailing
    7-bar return volatility to a cascade frequency (high volatility, more big moves).
    """

    def __init__(self, y: np.ndarray, prev: np.ndarray, vol: np.ndarray) -> None:
        y = np.asarray(y, dtype=float)
        self.rate = float(y.mean())
        prev = np.asarray(prev, dtype=float)
        self.after = {
            k: float(y[prev == k].mean()) if (prev == k).any() else self.rate for k in (0, 1)
        }
        ok = np.isfinite(vol)
        self.iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
        self.iso.fit(np.asarray(vol)[ok], y[ok])

    def predict(self, prev: np.ndarray, vol: np.ndarray) -> dict[str, np.ndarray]:
        prev = np.asarray(prev, dtype=float)
        vol = np.asarray(vol, dtype=float)
        pers = np.where(prev == 1, self.after[1], np.where(prev == 0, self.after[0], self.rate))
        v = np.full(len(vol), self.rate)
        ok = np.isfinite(vol)
        if ok.any():
            v[ok] = self.iso.predict(vol[ok])
        return {"climatology": np.full(len(vol), self.rate), "persistence": pers, "volatility": v}
