"""Executes approved intents on paper or live."""

from __future__ import annotations

from hean.runtime.logic import Input, ServiceLogic


class OrderRouterLogic(ServiceLogic):
    name = "order-router"

    def inputs(self) -> list[Input]:
        return []
