"""funding-predictor: Forecasts the next funding rate per symbol."""
