"""The seven services: name, module and default health port.

``hean up``, ``hean service``, ``hean status``, docker compose and the Kubernetes manifests are
all checked against this one list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port_offset: int
    description: str

    def port(self, base: int = 8100) -> int:
        return base + self.port_offset


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "funding-collector",
        "hean_services.funding_collector.main",
        1,
        "funding, open interest, prices, books and liquidations from every venue",
    ),
    ServiceSpec(
        "listing-scanner",
        "hean_services.listing_scanner.main",
        2,
        "new perpetual listings and their funding spikes; alert delivery",
    ),
    ServiceSpec(
        "funding-predictor",
        "hean_services.funding_predictor.main",
        3,
        "LSTM forecast of the next funding rate with ENTER/HOLD/EXIT",
    ),
    ServiceSpec(
        "liquidation-predictor",
        "hean_services.liquidation_predictor.main",
        4,
        "RandomForest liquidation-cascade probability",
    ),
    ServiceSpec(
        "strategy-engine",
        "hean_services.strategy_engine.main",
        5,
        "funding harvester, cross-venue funding arbitrage, liquidation hunter",
    ),
    ServiceSpec(
        "risk-killswitch",
        "hean_services.risk_killswitch.main",
        6,
        "checks every signal, watches drawdown, latches HALTED",
    ),
    ServiceSpec(
        "order-router",
        "hean_services.order_router.main",
        7,
        "paper or live execution of approved intents, idempotent",
    ),
)

SIM_PORT_OFFSET = 10
DEFAULT_PORT_BASE = 8100

BY_NAME = {s.name: s for s in SERVICES}


def spec(name: str) -> ServiceSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(BY_NAME)}") from None
