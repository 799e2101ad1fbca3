"""Prediction intervals and confidence from held-out residuals (split conformal).

Residuals (realised minus forecast, bps per interval) from a calibration period are stored as
quantiles per (venue, interval), per interval, and overall; a forecast uses the most specific
bucket with enough residuals. The interval is [forecast + q_lo, forecast + q_hi]; the
confidence is the empirical probability that the realised rate has the forecast's sign,
``P(forecast + r has the sign of forecast)``, read off the same residual distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUANTILE_GRID = np.linspace(0.0, 1.0, 101)
MIN_BUCKET = 50


def bucket_keys(venue: str, interval_hours: float) -> list[str]:
    return [f"{venue}|{interval_hours:g}", f"*|{interval_hours:g}", "*|*"]


@dataclass
class Calibration:
    coverage: float = 0.9
    buckets: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        residuals: np.ndarray,
        venues: np.ndarray,
        intervals: np.ndarray,
        coverage: float = 0.9,
    ) -> Calibration:
        cal = cls(coverage=coverage)
        keys_per_row = [bucket_keys(v, i) for v, i in zip(venues, intervals, strict=True)]
        groups: dict[str, list[int]] = {}
        for row, keys in enumerate(keys_per_row):
            for k in keys:
                groups.setdefault(k, []).append(row)
        for k, rows in groups.items():
            if len(rows) >= MIN_BUCKET or k == "*|*":
                r = residuals[np.asarray(rows)]
                cal.buckets[k] = np.quantile(r, QUANTILE_GRID).round(6).tolist()
                cal.counts[k] = len(rows)
        return cal

    def _quantiles(self, venue: str, interval_hours: float) -> np.ndarray:
        for k in bucket_keys(venue, interval_hours):
            if k in self.buckets:
                return np.asarray(self.buckets[k])
        raise KeyError("calibration has no residuals")

    def interval(
        self, pred: float, venue: str, interval_hours: float
    ) -> tuple[float, float, float]:
        """(lower, upper, confidence) for one forecast in bps per interval."""
        q = self._quantiles(venue, interval_hours)
        alpha = (1.0 - self.coverage) / 2
        lo = pred + float(np.interp(alpha, QUANTILE_GRID, q))
        hi = pred + float(np.interp(1 - alpha, QUANTILE_GRID, q))
        if pred == 0:
            return lo, hi, 0.5
        # CDF of residuals at -pred: share of outcomes that would end at or below zero
        cdf = float(np.interp(-pred, q, QUANTILE_GRID, left=0.0, right=1.0))
        conf = 1.0 - cdf if pred > 0 else cdf
        return lo, hi, min(1.0, max(0.0, conf))

    def to_json(self) -> dict:
        return {"coverage": self.coverage, "buckets": self.buckets, "counts": self.counts}

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        return cls(coverage=d["coverage"], buckets=d["buckets"], counts=d.get("counts", {}))
