"""Seeded synthetic history in the shared data layout, for tests and the replay benchmark.

Two venues with different funding schedules (8 h and 4 h) quote one symbol; the 4-hourly
venue's rate drifts away from the other's and back, so spreads open and close. Prices follow
a seeded random walk. ``write_data_dir`` writes the same files the real data directory holds
(``normalized/funding_settlements.parquet`` and ``klines/<src>/klines_1d/<SYMBOL>.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

H = 3_600_000
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z


def funding_frame(
    days: int = 30, symbols: tuple[str, ...] = ("BTCUSDT",), seed: int = 7
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k, symbol in enumerate(symbols):
        for venue, interval in (("bybit", 8), ("binance", 4)):
            n = days * 24 // interval
            t = START_MS + np.arange(n) * interval * H
            phase = np.sin(np.arange(n) * interval / (24 * 5) + k)
            base = 0.0001 * interval / 8
            wide = 0.0008 * interval / 8 if venue == "binance" else 0.0
            rate = base + wide * np.clip(phase, 0, None) + rng.normal(0, 0.00002, n)
            for ti, ri in zip(t, rate, strict=True):
                rows.append((int(ti), float(ri), venue, symbol, float(interval)))
    df = pd.DataFrame(rows, columns=["t", "funding_rate", "exchange", "symbol", "interval_hours"])
    df["funding_time_utc"] = pd.to_datetime(df["t"], unit="ms", utc=True)
    df["source"] = "synthetic"
    return df.drop(columns=["t"])


def klines_frame(days: int = 30, seed: int = 7, start_price: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    n = days + 2
    t = START_MS - 86_400_000 + np.arange(n) * 86_400_000
    close = start_price * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate([[start_price], close[:-1]])
    return pd.DataFrame(
        {
            "timestamp": t,
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1000.0,
            "quote_volume": 1000.0 * close,
            "trades": 100,
            "close_time": t + 86_399_999,
        }
    )


def write_data_dir(
    root: Path, days: int = 30, symbols: tuple[str, ...] = ("BTCUSDT",), seed: int = 7
) -> Path:
    (root / "normalized").mkdir(parents=True, exist_ok=True)
    funding_frame(days, symbols, seed).to_parquet(
        root / "normalized" / "funding_settlements.parquet"
    )
    kdir = root / "klines" / "synthetic" / "klines_1d"
    kdir.mkdir(parents=True, exist_ok=True)
    for i, symbol in enumerate(symbols):
        klines_frame(days, seed + i, 100.0 * (i + 1)).to_csv(kdir / f"{symbol}.csv", index=False)
    return root
