"""Market-data math shared by the collector, the strategies and the backtester."""
