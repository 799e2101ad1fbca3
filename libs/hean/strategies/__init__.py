"""Strategy registry: name -> factory building a configured strategy.

Every strategy module is imported here except optional ones, which are registered only when
their module exists, so a missing optional strategy never breaks the engine or the backtester.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from hean.strategies.base import Strategy, StrategyConfig

Factory = Callable[[StrategyConfig | Mapping[str, Any] | None], Strategy]

_BUILTIN: dict[str, tuple[str, str]] = {
    "funding_harvester": ("hean.strategies.funding_harvester", "FundingHarvester"),
    "cross_venue_arb": ("hean.strategies.funding_arbitrage", "FundingArbitrage"),
}
_OPTIONAL: dict[str, tuple[str, str]] = {
    "liquidation_hunter": ("hean.strategies.liquidation_hunter", "LiquidationHunter"),
}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _factory(module: str, cls_name: str) -> Factory:
    def build(config: StrategyConfig | Mapping[str, Any] | None = None) -> Strategy:
        cls = getattr(importlib.import_module(module), cls_name)
        return cls(config)

    build.__name__ = f"build_{cls_name}"
    return build


def _registry() -> dict[str, Factory]:
    out: dict[str, Factory] = {}
    for name, (module, cls_name) in _BUILTIN.items():
        if _module_exists(module):
            out[name] = _factory(module, cls_name)
    for name, (module, cls_name) in _OPTIONAL.items():
        if _module_exists(module):
            out[name] = _factory(module, cls_name)
    return out


STRATEGIES: dict[str, Factory] = _registry()
"""Every strategy available in this installation, by name."""

ALIASES: dict[str, str] = {
    "funding_arbitrage": "cross_venue_arb",
    "funding_arb": "cross_venue_arb",
}


def canonical_name(name: str) -> str:
    key = name.strip().replace("-", "_")
    return ALIASES.get(key, key)


def build(name: str, config: StrategyConfig | Mapping[str, Any] | None = None) -> Strategy:
    """A configured strategy by name; ValueError naming the known ones when unknown."""
    key = canonical_name(name)
    if key not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES)) or "none"
        raise ValueError(f"unknown strategy {name!r}; known: {known}")
    return STRATEGIES[key](config)


__all__ = ["STRATEGIES", "Factory", "Strategy", "StrategyConfig", "build", "canonical_name"]
