"""Seeded synthetic funding history: AR(1) rates with momentum, three venues, a 1 h series."""

from __future__ import annotations

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01", tz="UTC")


def series(venue: str, symbol: str, n: int, interval: float, seed: int, common=None):
    rng = np.random.default_rng(seed)
    rate = np.empty(n)
    x = 1e-4
    for i in range(n):
        shock = rng.normal(0, 2e-5)
        drift = 0.0 if common is None else 0.3 * (common[i] - x)
        x = 1e-4 + 0.85 * (x - 1e-4) + drift + shock
        rate[i] = x * interval / 8.0
    times = START + pd.to_timedelta(np.arange(n) * interval, unit="h")
    return pd.DataFrame(
        {
            "funding_time_utc": times,
            "exchange": venue,
            "symbol": symbol,
            "funding_rate": rate,
            "interval_hours": interval,
        }
    )


def table(n: int = 400, seed: int = 1) -> pd.DataFrame:
    common = series("x", "X", n, 8.0, seed)["funding_rate"].to_numpy()
    parts = [
        series("binance", "BTCUSDT", n, 8.0, seed + 1, common),
        series("bybit", "BTCUSDT", n, 8.0, seed + 2, common),
        series("okx", "BTC-USDT-SWAP", n, 8.0, seed + 3, common),
        series("dydx", "ETHUSDT", n, 1.0, seed + 4),
    ]
    return pd.concat(parts, ignore_index=True)
