"""Liquidation-cascade model: features, label rule, RandomForest with calibrated probability."""
