"""Process entry for risk-killswitch: binds RiskKillswitchLogic to NATS."""

from __future__ import annotations

from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp
from hean_services.risk_killswitch.logic import RiskKillswitchLogic


class Settings(ServiceSettings, kw_only=True):
    pass


def build(settings: Settings) -> ServiceApp:
    return ServiceApp(logic=RiskKillswitchLogic())
