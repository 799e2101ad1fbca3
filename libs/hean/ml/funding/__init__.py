"""The funding-rate forecaster: features, LSTM, walk-forward training and honest evaluation."""
