"""Intraday cascade features and label: the issue's live inputs on short bars.

Bars of one symbol, oldest first, with the daily columns (``BAR_COLUMNS``) plus
``book_imbalance`` (the bar's last top-N book imbalance, NaN where no book was seen),
``liq_long_usd`` and ``liq_short_usd`` (liquidated notional printed in the bar by liquidated
side, NaN where the venue streams no liquidations). Row ``t`` uses bars ``<= t`` only; the
label of row ``t`` looks at the bars after it, up to the rule's horizon.

The features are the issue's list and nothing else: open-interest change over 1 h, funding,
distance to the nearest estimated liquidation cluster below and above plus the liquidatable
share of open interest near the price on each side, top-N book imbalance, 15-minute momentum,
and the liquidated volume of the last 15 minutes on each side as a share of open interest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from hean.ml.cascade.features import BAR_COLUMNS, ClusterConfig, cluster_columns, sorted_bars
from hean.ml.cascade.labels import DOWN, NONE, UP
from hean.ml.cascade.tiers import LeverageBucket, buckets

INTRADAY_FEATURES: tuple[str, ...] = (
    "oi_change_1h",
    "funding_bps8",
    "liq_dist_down",
    "liq_dist_up",
    "liq_share_down",
    "liq_share_up",
    "book_imbalance",
    "momentum_15m",
    "liq_long_15m",
    "liq_short_15m",
)
LIVE_COLUMNS = ("book_imbalance", "liq_long_usd", "liq_short_usd")
INTRADAY_BAR_COLUMNS = (*BAR_COLUMNS, *LIVE_COLUMNS)
HOUR_MS = 3_600_000
MOMENTUM_MS = 15 * 60_000

INTRADAY_CLUSTER = ClusterConfig(lookback_bars=72, bin_frac=0.0025, near_frac=0.02)
"""Six hours of 5-minute bars, quarter-percent bins, liquidatable share within 2 %: intraday
moves are a few percent, so the daily settings (30 days, 1 % bins, 5 %) would see no structure."""


def bars_back(window_ms: int, bar_ms: int) -> int:
    """How many bars span ``window_ms``; the window must be a whole number of bars."""
    if bar_ms <= 0 or window_ms % bar_ms:
        raise ValueError(f"window {window_ms} ms is not a whole number of {bar_ms} ms bars")
    return window_ms // bar_ms


def compute_intraday_features(
    bars: pd.DataFrame,
    bar_ms: int,
    bks: Sequence[LeverageBucket] | None = None,
    cfg: ClusterConfig | None = None,
) -> pd.DataFrame:
    """One row of ``INTRADAY_FEATURES`` per bar of one symbol (index aligned with ``bars``)."""
    cfg = cfg or INTRADAY_CLUSTER
    bks = list(bks or buckets())
    b = sorted_bars(bars, INTRADAY_BAR_COLUMNS)
    close = b["close"].astype(float)
    oi = b["oi_units"].astype(float)
    k_hour, k_mom = bars_back(HOUR_MS, bar_ms), bars_back(MOMENTUM_MS, bar_ms)
    oi_usd = oi * close
    out = pd.DataFrame(index=b.index)
    out["oi_change_1h"] = oi / oi.shift(k_hour) - 1.0
    out["funding_bps8"] = b["funding_bps8"].astype(float)
    cols = cluster_columns(b, bks, cfg)
    out["liq_dist_down"] = cols[:, 0]
    out["liq_dist_up"] = cols[:, 1]
    out["liq_share_down"] = cols[:, 2]
    out["liq_share_up"] = cols[:, 3]
    out["book_imbalance"] = b["book_imbalance"].astype(float)
    out["momentum_15m"] = close / close.shift(k_mom) - 1.0
    for side in ("long", "short"):
        # NaN stays NaN: a venue without a liquidation stream is unknown, not quiet
        usd = b[f"liq_{side}_usd"].astype(float).rolling(k_mom, min_periods=k_mom).sum()
        out[f"liq_{side}_15m"] = usd / oi_usd
    return out[list(INTRADAY_FEATURES)]


@dataclass(frozen=True)
class WindowLabelRule:
    """A cascade within the horizon: the price moves at least ``move_frac`` from the close at
    the forecast, and open interest (units) falls at least ``oi_drop_frac`` below its value
    at the forecast, both within the next ``horizon_ms``. Direction: the side that reached
    the move first (the larger excursion when both did in the same bar)."""

    move_frac: float = 0.02
    oi_drop_frac: float = 0.03
    horizon_ms: int = HOUR_MS

    def to_meta(self) -> dict[str, float]:
        return asdict(self)


def window_labels(bars: pd.DataFrame, bar_ms: int, rule: WindowLabelRule) -> pd.Series:
    """Label of the window after each row of one symbol; NaN where the window is incomplete
    or an input is unusable."""
    h = bars_back(rule.horizon_ms, bar_ms)
    b = bars.sort_values("time_ms")
    c, hi, lo, oi = (b[k].to_numpy(float) for k in ("close", "high", "low", "oi_units"))
    out = np.full(len(b), np.nan)
    for t in range(len(b) - h):
        w = slice(t + 1, t + 1 + h)
        vals = np.concatenate(([c[t], oi[t]], hi[w], lo[w], oi[w]))
        if not np.isfinite(vals).all() or c[t] <= 0 or oi[t] <= 0:
            continue
        if oi[w].min() / oi[t] - 1.0 > -rule.oi_drop_frac:
            out[t] = NONE
            continue
        down = 1.0 - lo[w] / c[t]
        up = hi[w] / c[t] - 1.0
        hit_down = np.flatnonzero(down >= rule.move_frac)
        hit_up = np.flatnonzero(up >= rule.move_frac)
        if not len(hit_down) and not len(hit_up):
            out[t] = NONE
        elif not len(hit_up) or (len(hit_down) and hit_down[0] < hit_up[0]):
            out[t] = DOWN
        elif not len(hit_down) or hit_up[0] < hit_down[0]:
            out[t] = UP
        else:
            i = hit_down[0]
            out[t] = DOWN if down[i] >= up[i] else UP
    return pd.Series(out, index=b.index, name="label")
