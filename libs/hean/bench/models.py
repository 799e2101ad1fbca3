"""Funding-predictor inference for 1,000 symbols: one batch against one call per symbol."""

from __future__ import annotations

import statistics
import time


def funding_batch(
    n_symbols: int = 1000, history: int = 48, repeats: int = 3, sample: int = 100
) -> dict:
    """Median batch time for all symbols; the reference calls one symbol at a time on a
    sample of them (the per-call cost does not depend on which symbol)."""
    from hean.ml.funding.bench import histories
    from hean.ml.funding.model import DEFAULT_DIR, FundingForecaster

    forecaster = FundingForecaster.load(str(DEFAULT_DIR))
    series = histories(n_symbols, history)
    forecaster.predict_batch(series)  # warm-up
    batch_runs, single_runs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        made = forecaster.predict_batch(series)
        batch_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in series[:sample]:
            forecaster.predict_batch([s])
        single_runs.append((time.perf_counter() - t0) / sample)
    batch, single = statistics.median(batch_runs), statistics.median(single_runs)
    return {
        "symbols": n_symbols,
        "forecasts": sum(f is not None for f in made),
        "batch_s": round(batch, 4),
        "batch_per_symbol_ms": round(batch / n_symbols * 1e3, 3),
        "one_call_per_symbol_ms": round(single * 1e3, 3),
        "speedup": round(single * n_symbols / batch, 1),
        "model_version": forecaster.version,
    }
