"""Real bars for the cascade model: daily Binance klines joined with daily open interest.

The shared data holds no intraday open interest and no long liquidation history, so the real
training set is daily: Binance USD-M klines (2024-01-10 onwards) joined on the UTC day with
Coinalyze open interest (Binance, USD), plus Binance funding settlements where they exist
(BTC, ETH, BNB, SOL, XRP, DOGE; NaN elsewhere). Coinalyze reports coin-margined series
(``*USD_PERP``) in USD contracts, whose count does not move with price, and USDT-margined ones
(``*USDT_PERP``) as base units times price; both are turned into position units here.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.cascade.features import BAR_COLUMNS

DAY_MS = 86_400_000
KLINES = "klines/silertrades_gravestone-data/klines_1d"
OPEN_INTEREST = "open_interest/smoothbrainquant_coinalyze"
FUNDING = "normalized/funding_settlements.parquet"


class CascadeDataError(ValueError):
    """The data directory lacks what the cascade model needs; the message names it."""


def data_dir(path: str | Path | None) -> Path:
    p = Path(path or os.environ.get("HEAN_DATA_DIR") or "")
    if not str(p) or not (p / KLINES).is_dir() or not (p / OPEN_INTEREST).is_dir():
        raise CascadeDataError(
            f"{p or '(unset)'}: need {KLINES}/ and {OPEN_INTEREST}/ (set HEAN_DATA_DIR or --data)"
        )
    return p


def _funding_daily(root: Path) -> pd.DataFrame:
    f = root / FUNDING
    if not f.exists():
        return pd.DataFrame(columns=["symbol", "day_ms", "funding_bps8"])
    fr = pd.read_parquet(
        f, columns=["funding_time_utc", "funding_rate", "exchange", "symbol", "interval_hours"]
    )
    fr = fr[(fr["exchange"] == "binance") & fr["interval_hours"].isin([1.0, 2.0, 4.0, 8.0])]
    t = fr["funding_time_utc"].dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64")
    fr = fr.assign(
        day_ms=(t // DAY_MS) * DAY_MS,
        funding_bps8=fr["funding_rate"] * 1e4 * 8.0 / fr["interval_hours"],
    )
    return fr.groupby(["symbol", "day_ms"], as_index=False)["funding_bps8"].mean()


def load_bars(path: str | Path | None = None, symbols: list[str] | None = None) -> pd.DataFrame:
    """Daily bars of every symbol with both klines and open interest; sorted by symbol, time."""
    root = data_dir(path)
    files = sorted(glob.glob(str(root / OPEN_INTEREST / "*.csv")))
    if not files:
        raise CascadeDataError(f"{root / OPEN_INTEREST}: no open-interest CSV")
    oi = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    need = {"coin_symbol", "symbol", "timestamp", "oi_close"}
    if not need <= set(oi.columns):
        raise CascadeDataError(f"open-interest files lack {sorted(need - set(oi.columns))}")
    funding = _funding_daily(root)
    frames = []
    for series, g in oi.groupby("symbol"):
        pair = f"{g['coin_symbol'].iloc[0]}USDT"
        if symbols and pair not in symbols:
            continue
        kf = root / KLINES / f"{pair}.csv"
        if not kf.exists() or not str(series).endswith(".A"):
            continue
        k = pd.read_csv(kf)
        g = g.assign(time_ms=(g["timestamp"].astype("int64") * 1000 // DAY_MS) * DAY_MS)
        g = g.drop_duplicates("time_ms", keep="last")
        m = k.rename(columns={"timestamp": "time_ms"}).merge(
            g[["time_ms", "oi_close"]], on="time_ms", how="inner"
        )
        if m.empty:
            continue
        usd_margined = "USDT_PERP" in str(series) or "USDC" in str(series)
        m["oi_units"] = m["oi_close"] / m["close"] if usd_margined else m["oi_close"]
        m["oi_units"] = m["oi_units"].where(m["oi_units"] > 0)
        m["symbol"] = pair
        m = m.merge(
            funding[funding["symbol"] == pair][["day_ms", "funding_bps8"]],
            left_on="time_ms",
            right_on="day_ms",
            how="left",
        )
        frames.append(m[["symbol", *BAR_COLUMNS]])
    if not frames:
        raise CascadeDataError(f"{root}: no symbol has both klines and open interest")
    bars = pd.concat(frames, ignore_index=True)
    for c in ("open", "high", "low", "close"):
        bars[c] = bars[c].astype(float)
    bars = bars[np.isfinite(bars["close"]) & (bars["close"] > 0)]
    return bars.sort_values(["symbol", "time_ms"]).reset_index(drop=True)
