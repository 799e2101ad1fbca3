"""Backtests: the live strategy classes replayed over real history with every cost charged."""

from hean.backtest.data import BacktestDataError, History, load_history
from hean.backtest.engine import BacktestConfig, BacktestResult, replay, run_backtest

__all__ = [
    "BacktestConfig",
    "BacktestDataError",
    "BacktestResult",
    "History",
    "load_history",
    "replay",
    "run_backtest",
]
