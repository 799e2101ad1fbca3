"""Batched inference benchmark: one forecast for each of N symbols in one call.

``python -m hean.ml.funding.bench [--symbols 1000] [--history 48] [--model DIR]`` prints the
median wall time of ``FundingForecaster.predict_batch`` over a few repeats, on seeded
synthetic histories (three venues per base symbol, so the cross-venue feature is exercised).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def histories(n_symbols: int, history: int, seed: int = 0):
    from hean.ml.funding.model import SeriesHistory

    rng = np.random.default_rng(seed)
    venues = ("binance", "bybit", "okx")
    start = 1_700_000_000_000 - 1_700_000_000_000 % 28_800_000
    times = [start + i * 28_800_000 for i in range(history)]
    out = []
    for k in range(n_symbols):
        base = 1e-4 + np.cumsum(rng.normal(0, 1e-5, history))
        venue = venues[k % 3]
        out.append(
            SeriesHistory(
                venue,
                f"C{k // 3:04d}USDT",
                times,
                (base + rng.normal(0, 5e-6, history)).tolist(),
                [8.0] * history,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    from hean.ml.funding.model import DEFAULT_DIR, FundingForecaster

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--symbols", type=int, default=1000)
    p.add_argument("--history", type=int, default=48)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default=str(DEFAULT_DIR))
    args = p.parse_args(argv)
    fc = FundingForecaster.load(args.model)
    hist = histories(args.symbols, args.history)
    fc.predict_batch(hist)  # warm-up
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = fc.predict_batch(hist)
        runs.append(time.perf_counter() - t0)
    made = sum(r is not None for r in result)
    print(
        json.dumps(
            {
                "bench": "funding_predict_batch",
                "symbols": args.symbols,
                "history": args.history,
                "forecasts": made,
                "median_s": round(statistics.median(runs), 4),
                "per_symbol_ms": round(statistics.median(runs) / args.symbols * 1e3, 3),
                "model_version": fc.version,
            }
        )
    )
    return 0 if made == args.symbols else 1


if __name__ == "__main__":
    raise SystemExit(main())
