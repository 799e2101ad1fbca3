"""Cascade features, computed the same way on history and live, with no look-ahead.

Inputs are bars of one symbol, oldest first: ``time_ms`` (bar open), ``open``, ``high``,
``low``, ``close`` (price), ``oi_units`` (open interest as position size: contracts or base
units, not USD, so that a price move alone does not look like positions closing) and
``funding_bps8`` (funding rate in bps per 8 h, NaN where unknown). Row ``t`` of the output uses
bars ``<= t`` only; the trainer pairs it with the label of bar ``t + 1``.

Order-book imbalance, 15-minute momentum and recent liquidation volume have no history in the
shared data, so they are not features of this daily set; they are inputs of the intraday set
(``hean.ml.cascade.intraday``), trained on simulator markets, and the live predictor computes
them with the functions at the end of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hean.ml.cascade.tiers import LeverageBucket, buckets

FEATURES: tuple[str, ...] = (
    "oi_change_1",
    "oi_change_3",
    "oi_build_7",
    "funding_bps8",
    "ret_1",
    "ret_3",
    "range_1",
    "vol_7",
    "liq_dist_down",
    "liq_dist_up",
    "liq_share_down_5",
    "liq_share_up_5",
)
BAR_COLUMNS = ("time_ms", "open", "high", "low", "close", "oi_units", "funding_bps8")


@dataclass(frozen=True)
class ClusterConfig:
    """How the liquidation map is estimated; stored in the artifact."""

    lookback_bars: int = 30
    """Open-interest increases older than this are assumed closed or rolled."""
    bin_frac: float = 0.01
    """Width of a price bin (log scale) when grouping liquidation levels into clusters."""
    cluster_min_share: float = 0.2
    """A bin is a cluster when it holds at least this share of the heaviest bin's mass."""
    near_frac: float = 0.05
    """Band for the ``liq_share_*_5`` features: mass within 5 % of the price."""


@dataclass(frozen=True)
class LiquidationMap:
    """Estimated notional (position units) liquidated at price levels below and above."""

    long_levels: np.ndarray
    long_mass: np.ndarray
    short_levels: np.ndarray
    short_mass: np.ndarray


def liquidation_map(
    entry: Sequence[float],
    oi_units: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    bks: Sequence[LeverageBucket] | None = None,
    lookback: int = 30,
) -> LiquidationMap:
    """Where the positions opened over the last ``lookback`` bars would be liquidated.

    Every open-interest increase at bar ``i`` is taken as new positions entered at
    ``entry[i]``, half long and half short, spread over the leverage buckets. A position is
    gone once the price traded through its liquidation level in a later bar. An open-interest
    decrease closes surviving positions pro rata. Assumes isolated margin and no top-ups.
    """
    bks = list(bks or buckets())
    e = np.asarray(entry, dtype=float)
    oi = np.asarray(oi_units, dtype=float)
    lo = np.asarray(low, dtype=float)
    hi = np.asarray(high, dtype=float)
    n = len(e)
    start = max(1, n - lookback)
    lev_long = np.array([1.0 - 1.0 / b.leverage + b.mmr for b in bks])
    lev_short = np.array([1.0 + 1.0 / b.leverage - b.mmr for b in bks])
    weights = np.array([b.weight for b in bks])
    empty = np.empty(0)
    if n < 2:
        return LiquidationMap(empty, empty, empty, empty)
    # for each bar: lowest low / highest high after it, and the share of positions still open
    # after the later open-interest decreases (pro rata)
    lo_f = np.where(np.isfinite(lo), lo, np.inf)
    hi_f = np.where(np.isfinite(hi), hi, -np.inf)
    after_lo = np.append(np.minimum.accumulate(lo_f[::-1])[::-1][1:], np.inf)
    after_hi = np.append(np.maximum.accumulate(hi_f[::-1])[::-1][1:], -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = oi[1:] / oi[:-1]
    falls = np.isfinite(oi[1:]) & np.isfinite(oi[:-1]) & (oi[1:] < oi[:-1])
    step_keep = np.where(falls, np.maximum(0.0, ratio), 1.0)  # step_keep[j-1]: at bar j
    keep = np.append(np.cumprod(step_keep[::-1])[::-1], 1.0)
    i = np.arange(start, n)
    added = oi[i] - oi[i - 1]
    ok = np.isfinite(oi[i]) & np.isfinite(oi[i - 1]) & np.isfinite(e[i]) & (added > 0)
    i, added = i[ok], added[ok]
    long_px = np.outer(e[i], lev_long)
    short_px = np.outer(e[i], lev_short)
    mass = 0.5 * np.outer(added * keep[i], weights)
    alive_l = long_px < after_lo[i][:, None]
    alive_s = short_px > after_hi[i][:, None]
    return LiquidationMap(long_px[alive_l], mass[alive_l], short_px[alive_s], mass[alive_s])


def nearest_cluster(
    price: float, levels: np.ndarray, mass: np.ndarray, side: str, cfg: ClusterConfig
) -> float:
    """Distance (fraction of ``price``) to the nearest cluster on ``side`` ('down'/'up').

    Levels are grouped into log-price bins of ``bin_frac``; a bin is a cluster when its mass is
    at least ``cluster_min_share`` of the heaviest bin on that side. NaN when there is none.
    """
    below = side == "down"
    sel = ((levels < price) if below else (levels > price)) & (mass > 0)
    if not sel.any() or not np.isfinite(price) or price <= 0:
        return float("nan")
    lv, ms = levels[sel], mass[sel]
    dist = np.abs(np.log(lv / price))
    idx = np.floor(dist / cfg.bin_frac).astype(int)
    bin_mass = np.bincount(idx, weights=ms)
    heavy = np.flatnonzero(bin_mass >= cfg.cluster_min_share * bin_mass.max())
    b = int(heavy.min())
    in_bin = idx == b
    centre = np.average(lv[in_bin], weights=ms[in_bin])
    return float(abs(centre / price - 1.0))


def share_within(price: float, levels: np.ndarray, mass: np.ndarray, oi: float, band: float):
    """Estimated liquidatable units within ``band`` of the price, as a share of open interest."""
    if not (np.isfinite(oi) and oi > 0 and np.isfinite(price)):
        return float("nan")
    sel = np.abs(levels / price - 1.0) <= band
    return float(mass[sel].sum() / oi)


def sorted_bars(bars: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The bars oldest first, refusing a frame without the columns a feature set needs."""
    missing = [c for c in columns if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}")
    return bars.sort_values("time_ms")


def compute_features(
    bars: pd.DataFrame,
    bks: Sequence[LeverageBucket] | None = None,
    cfg: ClusterConfig | None = None,
) -> pd.DataFrame:
    """One row of ``FEATURES`` per bar of one symbol (index aligned with ``bars``)."""
    cfg = cfg or ClusterConfig()
    bks = list(bks or buckets())
    b = sorted_bars(bars, BAR_COLUMNS)
    close = b["close"].astype(float)
    oi = b["oi_units"].astype(float)
    ret1 = close / close.shift(1) - 1.0
    out = pd.DataFrame(index=b.index)
    out["oi_change_1"] = oi / oi.shift(1) - 1.0
    out["oi_change_3"] = oi / oi.shift(3) - 1.0
    out["oi_build_7"] = oi / oi.rolling(7, min_periods=2).min() - 1.0
    out["funding_bps8"] = b["funding_bps8"].astype(float)
    out["ret_1"] = ret1
    out["ret_3"] = close / close.shift(3) - 1.0
    out["range_1"] = (b["high"] - b["low"]).astype(float) / close
    out["vol_7"] = ret1.rolling(7, min_periods=3).std()
    cols = cluster_columns(b, bks, cfg)
    out["liq_dist_down"] = cols[:, 0]
    out["liq_dist_up"] = cols[:, 1]
    out["liq_share_down_5"] = cols[:, 2]
    out["liq_share_up_5"] = cols[:, 3]
    return out[list(FEATURES)]


def cluster_columns(
    b: pd.DataFrame, bks: Sequence[LeverageBucket], cfg: ClusterConfig
) -> np.ndarray:
    """Per bar (sorted, oldest first): distance to the nearest cluster below and above, and the
    liquidatable share of open interest within ``cfg.near_frac`` below and above."""
    # typical price of the bar is the entry estimate of the positions opened in it
    entry = ((b["high"] + b["low"] + b["close"]) / 3.0).to_numpy(float)
    lo, hi, oiv, cl = (b[c].to_numpy(float) for c in ("low", "high", "oi_units", "close"))
    cols = np.full((len(b), 4), np.nan)
    for t in range(len(b)):
        s = max(0, t + 1 - cfg.lookback_bars - 1)
        m = liquidation_map(
            entry[s : t + 1], oiv[s : t + 1], lo[s : t + 1], hi[s : t + 1], bks, cfg.lookback_bars
        )
        p = cl[t]
        cols[t, 0] = nearest_cluster(p, m.long_levels, m.long_mass, "down", cfg)
        cols[t, 1] = nearest_cluster(p, m.short_levels, m.short_mass, "up", cfg)
        cols[t, 2] = share_within(p, m.long_levels, m.long_mass, oiv[t], cfg.near_frac)
        cols[t, 3] = share_within(p, m.short_levels, m.short_mass, oiv[t], cfg.near_frac)
    return cols


# ----------------------------------------------------------------------------- live-only


def book_imbalance(
    bids: Sequence[tuple[float, float]], asks: Sequence[tuple[float, float]], depth: int = 10
) -> float:
    """(bid notional - ask notional) / total over the top ``depth`` levels, in [-1, 1].

    Positive means more resting bids than asks. 0 for an empty book.
    """
    bid = sum(p * s for p, s in list(bids)[:depth])
    ask = sum(p * s for p, s in list(asks)[:depth])
    total = bid + ask
    return 0.0 if total <= 0 else (bid - ask) / total


def momentum(times_ms: Sequence[int], prices: Sequence[float], now_ms: int, window_ms: int):
    """Return from the last price at or before ``now_ms - window_ms`` to the latest price.

    NaN when no price is that old (not enough history to say).
    """
    cutoff = now_ms - window_ms
    past = None
    for t, p in zip(times_ms, prices, strict=True):
        if t <= cutoff:
            past = p
        else:
            break
    if past is None or not prices or past <= 0:
        return float("nan")
    return float(prices[-1] / past - 1.0)


def liquidation_volume(
    events: Sequence[tuple[int, str, float]], now_ms: int, window_ms: int
) -> tuple[float, float]:
    """(long-liquidation USD, short-liquidation USD) in the window; a long shows as a sell."""
    longs = shorts = 0.0
    for t, side, usd in events:
        if now_ms - window_ms < t <= now_ms:
            if side == "sell":
                longs += usd
            else:
                shorts += usd
    return longs, shorts
