"""Funding settlements as one clean, time-ordered table, from any Parquet or CSV.

Input columns: funding_time_utc, exchange, symbol, funding_rate, interval_hours (the layout of
the shared normalised table); optional open interest (``open_interest`` or ``oi_usd``) and price
(``price``, ``mark_price`` or ``close``). In that table an ``interval_hours`` other than 1, 2, 4 or
8 is the gap since the previous row (missing settlements), not a schedule: such rows take the
series' last real interval and are flagged ``gap_before`` so that a forecast never claims the row
after a hole is "the next settlement".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

STANDARD_INTERVALS = (1.0, 2.0, 4.0, 8.0)
REQUIRED = ("funding_time_utc", "exchange", "symbol", "funding_rate")
OI_COLUMNS = ("open_interest", "oi_usd")
PRICE_COLUMNS = ("price", "mark_price", "close")


class FundingDataError(ValueError):
    """A funding table that cannot be used; the message names the file and the problem."""


def canonical_symbol(native: str) -> str:
    """BASE+QUOTE across venues (``BTC-USDT-SWAP``, ``XBTUSD`` -> ``BTCUSDT``, ``BTCUSD``)."""
    s = str(native).strip().upper()
    if ":" in s:
        s = s.split(":", 1)[0]
    for suffix in ("-SWAP", "_PERP", "-PERP"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    s = s.replace("/", "").replace("-", "").replace("_", "")
    if s.startswith("XBT"):
        s = "BTC" + s[3:]
    return s


def _canonical_column(symbols: pd.Series) -> np.ndarray:
    values = symbols.astype(str).to_numpy()
    uniq, inverse = np.unique(values, return_inverse=True)
    return np.asarray([canonical_symbol(s) for s in uniq], dtype=object)[inverse]


def read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FundingDataError(f"{p}: file not found")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".csv":
        return pd.read_csv(p)
    raise FundingDataError(f"{p}: unsupported file type (expected .parquet or .csv)")


def _epoch_ms(times: pd.Series) -> np.ndarray:
    """Milliseconds since the epoch whatever the datetime resolution (ns, us, ms, s)."""
    delta = times - pd.Timestamp(0, tz="UTC")
    return (delta // pd.Timedelta(milliseconds=1)).fillna(0).astype("int64").to_numpy()


def _first_present(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in df.columns), None)


def clean_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Columns: time_ms, venue, symbol, rate, interval_hours, gap_before [, oi, price].

    Rows with a missing or non-finite rate are dropped (counted in ``attrs['dropped_rows']``);
    duplicates per (venue, symbol, time) keep the first.
    """
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise FundingDataError(f"missing columns: {', '.join(missing)}")
    times = pd.to_datetime(raw["funding_time_utc"], utc=True, errors="coerce")
    out = pd.DataFrame(
        {
            "time_ms": _epoch_ms(times),
            "venue": raw["exchange"].astype(str).str.lower().to_numpy(),
            "symbol": _canonical_column(raw["symbol"]),
            "rate": pd.to_numeric(raw["funding_rate"], errors="coerce").to_numpy(),
        }
    )
    interval_raw = (
        pd.to_numeric(raw["interval_hours"], errors="coerce").to_numpy()
        if "interval_hours" in raw.columns
        else np.full(len(raw), np.nan)
    )
    out["interval_raw"] = interval_raw
    oi_col = _first_present(raw, OI_COLUMNS)
    px_col = _first_present(raw, PRICE_COLUMNS)
    if oi_col:
        out["oi"] = pd.to_numeric(raw[oi_col], errors="coerce").to_numpy()
        out.loc[~(out["oi"] > 0), "oi"] = np.nan
    if px_col:
        out["price"] = pd.to_numeric(raw[px_col], errors="coerce").to_numpy()
        out.loc[~(out["price"] > 0), "price"] = np.nan
    ok = times.notna().to_numpy() & np.isfinite(out["rate"].to_numpy())
    ok &= np.abs(out["rate"].to_numpy()) <= 1.0
    dropped = int((~ok).sum())
    out = out[ok]
    out = out.sort_values(["venue", "symbol", "time_ms"], kind="stable")
    out = out.drop_duplicates(["venue", "symbol", "time_ms"], keep="first").reset_index(drop=True)
    out = _clean_intervals(out)
    out.attrs["dropped_rows"] = dropped
    return out


def _clean_intervals(df: pd.DataFrame) -> pd.DataFrame:
    key = df["venue"] + "|" + df["symbol"]
    first = key.ne(key.shift())
    gap_h = (df["time_ms"].diff() / 3_600_000).where(~first)
    gap_std = gap_h.round(2).isin(STANDARD_INTERVALS)
    raw = df["interval_raw"]
    raw_std = raw.isin(STANDARD_INTERVALS)
    # a row's interval: its standard raw value, else its standard gap, else the series' last one
    interval = raw.where(raw_std).fillna(gap_h.where(gap_std))
    interval = interval.groupby(key).ffill()
    interval = interval.groupby(key).bfill().fillna(8.0)
    df = df.drop(columns=["interval_raw"])
    df["interval_hours"] = interval.to_numpy()
    # a hole: the time since the previous row is longer than the schedule allows
    df["gap_before"] = ((gap_h > df["interval_hours"] * 1.25) & ~first).astype(np.float32)
    return df


def load(path: str | Path) -> pd.DataFrame:
    return clean_frame(read_table(path))
