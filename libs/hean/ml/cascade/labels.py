"""The cascade label: a measurable rule on the next bar.

A bar is a cascade when, measured from the previous close, the price's extreme within the bar
moved by at least ``move_frac`` (low for down, high for up) *and* open interest counted in
position units (not USD) closed the bar at least ``oi_drop_frac`` lower: a large move that
forced positions shut. Direction is the side that reached the threshold; when both did, the
larger excursion wins. Rule and thresholds are stored in the model artifact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

NONE, DOWN, UP = 0, 1, 2
DIRECTIONS = ("none", "down", "up")


@dataclass(frozen=True)
class LabelRule:
    move_frac: float = 0.07
    oi_drop_frac: float = 0.05

    def to_meta(self) -> dict[str, float]:
        return asdict(self)


def bar_label(
    prev_close: float, high: float, low: float, prev_oi: float, oi: float, rule: LabelRule
) -> int:
    """Label of one bar given the previous bar's close and open interest (units)."""
    vals = (prev_close, high, low, prev_oi, oi)
    if not all(np.isfinite(v) for v in vals) or prev_close <= 0 or prev_oi <= 0:
        raise ValueError(f"cannot label a bar from non-finite or non-positive inputs {vals}")
    if oi / prev_oi - 1.0 > -rule.oi_drop_frac:
        return NONE
    down = 1.0 - low / prev_close
    up = high / prev_close - 1.0
    if max(down, up) < rule.move_frac:
        return NONE
    return DOWN if down >= up else UP


def next_bar_labels(bars: pd.DataFrame, rule: LabelRule | None = None) -> pd.Series:
    """Label of bar ``t + 1`` for each row ``t`` of one symbol; NaN where unknown."""
    rule = rule or LabelRule()
    b = bars.sort_values("time_ms")
    c = b["close"].to_numpy(float)
    h = b["high"].to_numpy(float)
    lo = b["low"].to_numpy(float)
    oi = b["oi_units"].to_numpy(float)
    out = np.full(len(b), np.nan)
    for t in range(len(b) - 1):
        try:
            out[t] = bar_label(c[t], h[t + 1], lo[t + 1], oi[t], oi[t + 1], rule)
        except ValueError:
            continue
    return pd.Series(out, index=b.index, name="label")
