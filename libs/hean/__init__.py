"""HEAN shared libraries: bus, service runtime, venues, models, backtest."""

__version__ = "0.1.0"
