"""Models: the funding-rate LSTM and the liquidation-cascade forest."""
