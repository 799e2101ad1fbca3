"""liquidation-predictor: Estimates liquidation-cascade probability per symbol."""
