"""Process entry for liquidation-predictor: binds LiquidationPredictorLogic to NATS."""

from __future__ import annotations

from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp
from hean_services.liquidation_predictor.logic import LiquidationPredictorLogic


class Settings(ServiceSettings, kw_only=True):
    pass


def build(settings: Settings) -> ServiceApp:
    return ServiceApp(logic=LiquidationPredictorLogic())
