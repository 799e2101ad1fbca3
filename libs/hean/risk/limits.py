"""Risk limits: what a signal must satisfy and when trading stops.

Fractions are of current equity (``capital_usd`` plus everything the positions made or lost),
so limits shrink after losses instead of staying sized for money that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RiskLimits:
    capital_usd: float = 10_000.0
    max_trade_frac: float = 0.02
    """Notional of one leg at most this share of equity."""
    max_symbol_exposure_frac: float = 0.10
    """Gross notional on one canonical symbol, over all venues, including pending orders."""
    max_gross_exposure_frac: float = 0.50
    min_confidence: float = 0.6
    require_stop_loss: bool = True
    max_data_age_ms: int = 30_000
    """A leg's price must be at most this old, and its venue must have spoken this recently."""
    max_signal_age_ms: int = 30_000
    max_drawdown_frac: float = 0.20
    max_daily_loss_frac: float = 0.10
    max_loss_streak: int = 5
    max_rejections: int = 5
    rejection_window_ms: int = 300_000
    flatten_on_halt: bool = False
    pending_ttl_ms: int = 60_000
    """An approved leg counts as exposure until its order settles or this long."""
    state_publish_ms: int = 1_000

    def __post_init__(self) -> None:
        if self.capital_usd <= 0:
            raise ValueError("capital_usd must be > 0")
        for name in (
            "max_trade_frac",
            "max_symbol_exposure_frac",
            "max_gross_exposure_frac",
            "min_confidence",
            "max_drawdown_frac",
            "max_daily_loss_frac",
        ):
            value = getattr(self, name)
            if not 0 < value <= 1 and not (name == "min_confidence" and value == 0):
                raise ValueError(f"{name} must be in (0, 1], got {value}")
