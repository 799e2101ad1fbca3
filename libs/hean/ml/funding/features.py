"""Per-settlement features, computed from each series' own past only (no look-ahead).

Rates are compared on one horizon: basis points per 8 h equivalent (``rate * 8 / interval``),
because venues settle every 1, 2, 4 or 8 h. A row's features use that row and earlier rows of
the same series, plus other venues' settlements at or before that time. Optional inputs that a
series lacks (open interest, price, a peer venue) appear as an explicit ``*_available`` flag
next to the last known real value; until a first real value exists the value is 0 and the flag
says so. A row whose rolling windows are not yet full has NaN features and is never used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROLL = 8
EWMA_SPAN = 8
BASE_RATE_BPS8 = 1.0
"""0.01 % per 8 h: the rate most venues settle at while the premium stays inside their clamp."""
PEER_MAX_AGE_MS = 12 * 3_600_000

BASE_FEATURES = [
    "rate_bps8",
    "d_rate_bps8",
    "mean_bps8",
    "std_bps8",
    "ewma_dev_bps8",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "interval_hours",
    "gap_before",
    "xv_available",
    "xv_spread_bps8",
    "at_base",
    "base_share",
]
OI_FEATURES = ["oi_available", "oi_change"]
PRICE_FEATURES = ["px_available", "px_momentum"]


def feature_names(frame: pd.DataFrame) -> list[str]:
    """The feature list a table supports: optional groups only when the column exists."""
    names = list(BASE_FEATURES)
    if "oi" in frame.columns and frame["oi"].notna().any():
        names += OI_FEATURES
    if "price" in frame.columns and frame["price"].notna().any():
        names += PRICE_FEATURES
    return names


def _flag_and_last(values: pd.Series, key: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    avail = values.notna().to_numpy().astype(np.float32)
    last = values.groupby(key).ffill().fillna(0.0).to_numpy()
    return avail, last


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` from :func:`hean.ml.funding.data.clean_frame`, sorted by series and time."""
    df = frame.copy()
    key = df["venue"] + "|" + df["symbol"]
    df["series"] = key
    df["rate_bps8"] = df["rate"] * 1e4 * 8.0 / df["interval_hours"]
    g = df.groupby(key, sort=False)["rate_bps8"]
    df["d_rate_bps8"] = g.diff()
    roll = g.rolling(ROLL, min_periods=ROLL)
    df["mean_bps8"] = roll.mean().reset_index(level=0, drop=True)
    df["std_bps8"] = roll.std(ddof=0).reset_index(level=0, drop=True)
    df["ewma_bps8"] = g.ewm(span=EWMA_SPAN, adjust=False).mean().reset_index(level=0, drop=True)
    df["ewma_dev_bps8"] = df["rate_bps8"] - df["ewma_bps8"]
    # pinned at the base rate, the next settlement usually is too; a scaled level hides that
    df["at_base"] = (np.abs(df["rate_bps8"] - BASE_RATE_BPS8) < 1e-6).astype(np.float32)
    share = df.groupby(key, sort=False)["at_base"].rolling(ROLL, min_periods=ROLL).mean()
    df["base_share"] = share.reset_index(level=0, drop=True)
    t = pd.to_datetime(df["time_ms"], unit="ms", utc=True)
    hour = t.dt.hour + t.dt.minute / 60.0
    dow = t.dt.dayofweek + hour / 24.0
    df["hour_sin"] = np.sin(2 * np.pi * hour / 24.0)
    df["hour_cos"] = np.cos(2 * np.pi * hour / 24.0)
    df["dow_sin"] = np.sin(2 * np.pi * dow / 7.0)
    df["dow_cos"] = np.cos(2 * np.pi * dow / 7.0)
    spread = _peer_spread(df)
    df["xv_available"], df["xv_spread_bps8"] = _flag_and_last(spread, key)
    if "oi" in df.columns:
        oi = df.groupby(key, sort=False)["oi"].ffill()
        change = np.log(oi / oi.groupby(key, sort=False).shift())
        change = change.where(df["oi"].notna())
        df["oi_available"], df["oi_change"] = _flag_and_last(change, key)
    if "price" in df.columns:
        px = df.groupby(key, sort=False)["price"].ffill()
        mom = np.log(px / px.groupby(key, sort=False).shift(3))
        mom = mom.where(df["price"].notna())
        df["px_available"], df["px_momentum"] = _flag_and_last(mom, key)
    return df


def _peer_spread(df: pd.DataFrame) -> pd.Series:
    """This rate minus the mean of the same symbol's latest rates on other venues (bps per 8 h).

    A peer counts when it settled at or before this row and at most 12 h earlier; NaN when no
    peer qualifies. One as-of join per venue (by symbol), not per symbol.
    """
    multi = df.groupby("symbol")["venue"].transform("nunique") > 1
    if not multi.any():
        return pd.Series(np.nan, index=df.index)
    rows = df.loc[multi, ["time_ms", "symbol", "venue", "rate_bps8"]]
    left = rows.assign(_row=rows.index).sort_values("time_ms", kind="stable")
    total = np.zeros(len(left))
    count = np.zeros(len(left))
    for v in left["venue"].unique():
        peer = left.loc[left["venue"] == v, ["time_ms", "symbol", "rate_bps8"]]
        m = pd.merge_asof(
            left[["time_ms", "symbol"]],
            peer.rename(columns={"rate_bps8": "peer"}),
            on="time_ms",
            by="symbol",
            direction="backward",
            tolerance=PEER_MAX_AGE_MS,
        )["peer"].to_numpy()
        use = np.isfinite(m) & (left["venue"].to_numpy() != v)
        total[use] += m[use]
        count[use] += 1
    mean = np.full(len(left), np.nan)
    has = count > 0
    mean[has] = total[has] / count[has]
    out = pd.Series(np.nan, index=df.index)
    out.loc[left["_row"].to_numpy()] = left["rate_bps8"].to_numpy() - mean
    return out


def run_lengths(df: pd.DataFrame, names: list[str]) -> np.ndarray:
    """For each row, how many consecutive rows of its series up to it have complete features."""
    valid = np.isfinite(df[names].to_numpy(dtype=np.float64)).all(axis=1)
    series = df["series"].to_numpy()
    run = np.zeros(len(df), dtype=np.int64)
    prev_series = None
    count = 0
    for i in range(len(df)):
        if series[i] != prev_series:
            count = 0
            prev_series = series[i]
        count = count + 1 if valid[i] else 0
        run[i] = count
    return run


def targets(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Next settlement's rate (bps per 8 h) and whether it is a real next settlement."""
    nxt = df.groupby("series", sort=False)["rate_bps8"].shift(-1).to_numpy()
    nxt_gap = df.groupby("series", sort=False)["gap_before"].shift(-1).to_numpy()
    ok = np.isfinite(nxt) & (nxt_gap == 0)
    return nxt, ok
