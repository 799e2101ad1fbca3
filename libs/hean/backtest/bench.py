"""Replay throughput: market events per second through the live services on the in-memory bus."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def replay_throughput(days: int = 365, symbols: int = 4, seed: int = 7) -> dict:
    """Replays a seeded synthetic year (two venues, 8 h and 4 h schedules) with the arb."""
    from hean.backtest import BacktestConfig, load_history, replay
    from hean.backtest.synthetic import START_MS, write_data_dir
    from hean.strategies import build

    names = tuple(f"S{i}USDT" for i in range(symbols))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_data_dir(Path(tmp), days=days, symbols=names, seed=seed)
        history = load_history(root, START_MS, START_MS + days * 86_400_000)
    cfg = BacktestConfig(strategy="cross_venue_arb", baseline=False)
    started = time.perf_counter()
    result = replay(history, build("cross_venue_arb"), cfg)
    seconds = time.perf_counter() - started
    return {
        "strategy": "cross_venue_arb",
        "data": f"synthetic, seed {seed}, {days} days, {symbols} symbols x 2 venues",
        "settlements": len(history.funding),
        "events": result.events,
        "signals": len(result.signals),
        "seconds": round(seconds, 3),
        "events_per_s": round(result.events / seconds) if seconds > 0 else None,
    }


if __name__ == "__main__":
    print(replay_throughput())
