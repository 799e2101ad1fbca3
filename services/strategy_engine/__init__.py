"""strategy-engine: Turns forecasts and spreads into signals."""
