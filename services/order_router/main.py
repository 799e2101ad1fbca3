"""Process entry for order-router: binds OrderRouterLogic to NATS."""

from __future__ import annotations

from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp
from hean_services.order_router.logic import OrderRouterLogic


class Settings(ServiceSettings, kw_only=True):
    pass


def build(settings: Settings) -> ServiceApp:
    return ServiceApp(logic=OrderRouterLogic())
