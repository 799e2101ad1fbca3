"""Estimates liquidation-cascade probability per symbol."""

from __future__ import annotations

from hean.runtime.logic import Input, ServiceLogic


class LiquidationPredictorLogic(ServiceLogic):
    name = "liquidation-predictor"

    def inputs(self) -> list[Input]:
        return []
