"""Process entry for strategy-engine: builds the enabled strategies from settings.

``HEAN_STRATEGIES`` lists the strategies to run (comma-separated); per-strategy settings come
from the ``strategy_config`` mapping (config file section ``strategy_engine``, or the
``HEAN_STRATEGY_CONFIG`` environment variable holding JSON), e.g.
``{"cross_venue_arb": {"symbols": ["BTCUSDT"], "enter_net_bps_8h": 3}}``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from hean.config import ConfigError, ServiceSettings
from hean.runtime.runner import ServiceApp, ServiceContext
from hean.strategies import STRATEGIES, canonical_name
from hean.strategies import build as build_strategy
from hean.strategies.base import Strategy
from hean_services.strategy_engine.logic import EngineMetrics, StrategyEngineLogic


class Settings(ServiceSettings, kw_only=True):
    strategies: list[str] = msgspec.field(
        default_factory=lambda: ["funding_harvester", "cross_venue_arb"]
    )
    strategy_config: dict[str, dict[str, Any]] | str = msgspec.field(default_factory=dict)


def strategies_from(settings: Settings) -> list[Strategy]:
    """The configured strategies; a ConfigError names the bad one."""
    configs = settings.strategy_config
    if isinstance(configs, str):
        try:
            configs = json.loads(configs) if configs.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"HEAN_STRATEGY_CONFIG: not JSON: {exc}") from None
        if not isinstance(configs, dict):
            raise ConfigError("HEAN_STRATEGY_CONFIG: expected a JSON object")
    configs = {canonical_name(k): v for k, v in configs.items()}
    out: list[Strategy] = []
    for name in settings.strategies:
        key = canonical_name(name)
        if key not in STRATEGIES:
            known = ", ".join(sorted(STRATEGIES))
            raise ConfigError(f"HEAN_STRATEGIES: unknown strategy {name!r}; known: {known}")
        try:
            strategy = build_strategy(key, configs.get(key))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"HEAN_STRATEGY_CONFIG[{key}]: {exc}") from None
        if getattr(getattr(strategy, "config", None), "enabled", True):
            out.append(strategy)
    if not out:
        raise ConfigError("HEAN_STRATEGIES: no strategy enabled")
    return out


def build(settings: Settings) -> ServiceApp:
    logic = StrategyEngineLogic(strategies_from(settings))

    async def start(ctx: ServiceContext) -> None:
        logic.metrics = EngineMetrics(ctx.metrics.registry)

    return ServiceApp(logic=logic, on_start=[start])
