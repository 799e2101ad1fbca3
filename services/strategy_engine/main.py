"""Process entry for strategy-engine: binds StrategyEngineLogic to NATS."""

from __future__ import annotations

from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp
from hean_services.strategy_engine.logic import StrategyEngineLogic


class Settings(ServiceSettings, kw_only=True):
    pass


def build(settings: Settings) -> ServiceApp:
    return ServiceApp(logic=StrategyEngineLogic())
