"""risk-killswitch: Checks every signal and latches HALTED on drawdown."""
