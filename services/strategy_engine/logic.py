"""Turns forecasts and spreads into signals."""

from __future__ import annotations

from hean.runtime.logic import Input, ServiceLogic


class StrategyEngineLogic(ServiceLogic):
    name = "strategy-engine"

    def inputs(self) -> list[Input]:
        return []
