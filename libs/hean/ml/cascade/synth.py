"""A seeded market with leveraged positions and forced selling, for tests and a sanity run.

Traders keep opening positions at the current price with the documented leverage mix; the
price follows a random walk with volatility regimes; when it crosses a position's liquidation
price the position is closed by force and the closing order pushes the price further the same
way, which can liquidate the next layer: a cascade, with open interest dropping. It shares the
cluster model's assumptions, so it checks that the pipeline learns a mechanism that is there;
it says nothing about real markets (the real daily data does that).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hean.ml.cascade.tiers import buckets

DAY_MS = 86_400_000


def synthetic_bars(
    n_symbols: int = 6, n_bars: int = 400, seed: int = 7, substeps: int = 48, impact: float = 0.6
) -> pd.DataFrame:
    """Bars with the columns of ``load_bars`` (one bar = one day of ``substeps`` steps)."""
    rng = np.random.default_rng(seed)
    bks = buckets()
    rows = []
    t0 = 1_700_000_000_000 // DAY_MS * DAY_MS
    for s in range(n_symbols):
        price = 100.0 * (1 + s)
        entry = np.empty(0)
        liq = np.empty(0)
        side = np.empty(0)
        units = np.empty(0)
        sigma = 0.003
        funding = 1.0
        for t in range(n_bars):
            if rng.random() < 0.05:
                sigma = float(rng.choice([0.002, 0.003, 0.005, 0.008]))
            # new positions: crowding grows in calm markets, funding follows the long bias
            oi = units.sum()
            add = max(oi, 1000.0) * rng.uniform(0.0, 0.06)
            long_bias = float(np.clip(0.5 + 0.02 * funding + rng.normal(0, 0.1), 0.1, 0.9))
            for b in bks:
                for sd, share in ((1.0, long_bias), (-1.0, 1.0 - long_bias)):
                    u = add * b.weight * share
                    px = b.long_liq(price) if sd > 0 else b.short_liq(price)
                    entry = np.append(entry, price)
                    liq = np.append(liq, px)
                    side = np.append(side, sd)
                    units = np.append(units, u)
            units *= 1.0 - rng.uniform(0.0, 0.04)  # voluntary closes
            o = hi = lo = price
            push = 0.0
            for _ in range(substeps):
                price *= float(np.exp(sigma * rng.standard_normal() + push))
                push = 0.0
                hit = ((side > 0) & (price <= liq)) | ((side < 0) & (price >= liq))
                if hit.any():
                    oi_now = max(units.sum(), 1e-9)
                    forced = float((units[hit] * side[hit]).sum())  # + longs sold, - shorts bought
                    push = -impact * forced / oi_now
                    keep = ~hit
                    entry, liq, side, units = entry[keep], liq[keep], side[keep], units[keep]
                hi, lo = max(hi, price), min(lo, price)
            long_units = units[side > 0].sum()
            funding = 0.9 * funding + 10.0 * (long_units / max(units.sum(), 1e-9) - 0.5)
            rows.append(
                {
                    "symbol": f"SYN{s}USDT",
                    "time_ms": t0 + t * DAY_MS,
                    "open": o,
                    "high": hi,
                    "low": lo,
                    "close": price,
                    "oi_units": float(units.sum()),
                    "funding_bps8": funding,
                }
            )
    return pd.DataFrame(rows)
