"""Risk: limits on every signal, equity and drawdown watch, the latched kill switch."""
