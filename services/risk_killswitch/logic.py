"""Checks every signal and latches HALTED on drawdown."""

from __future__ import annotations

from hean.runtime.logic import Input, ServiceLogic


class RiskKillswitchLogic(ServiceLogic):
    name = "risk-killswitch"

    def inputs(self) -> list[Input]:
        return []
