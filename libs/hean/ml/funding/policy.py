"""ENTER / HOLD / EXIT from a forecast, cost-aware, on a bps-per-8 h scale.

Entering a funding harvest pays a round trip of fees and slippage (``round_trip_cost_bps``)
once, spread over the expected holding time (``hold_hours``); so the forecast must clear
``enter_bps_8h`` *after* that amortised cost. The rule:

* ENTER when |forecast| per 8 h minus the amortised cost per 8 h >= ``enter_bps_8h``, the
  confidence >= ``min_confidence`` and the forecast has the sign of the current rate;
* EXIT when the forecast's sign differs from the current rate's (with confidence >=
  ``min_confidence``) or |forecast| per 8 h < ``exit_bps_8h``;
* HOLD otherwise (keep whatever position exists, open nothing new).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionPolicy:
    enter_bps_8h: float = 3.0
    exit_bps_8h: float = 0.5
    min_confidence: float = 0.6
    round_trip_cost_bps: float = 20.0
    hold_hours: float = 72.0

    @property
    def cost_bps_8h(self) -> float:
        return self.round_trip_cost_bps * 8.0 / self.hold_hours

    def decide(self, current_bps8: float, predicted_bps8: float, confidence: float) -> str:
        same_sign = (current_bps8 > 0) == (predicted_bps8 > 0) and predicted_bps8 != 0
        if not same_sign and confidence >= self.min_confidence:
            return "EXIT"
        if abs(predicted_bps8) < self.exit_bps_8h:
            return "EXIT"
        net = abs(predicted_bps8) - self.cost_bps_8h
        if net >= self.enter_bps_8h and confidence >= self.min_confidence and same_sign:
            return "ENTER"
        return "HOLD"
