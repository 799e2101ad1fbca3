"""Runs the enabled strategies on the events they declare and publishes their signals.

Signals go to ``hean.signal.<strategy>.<symbol>``, which only risk-killswitch consumes: no
strategy ever reaches the order router directly. Each strategy is isolated: one that raises
is counted and logged and the others still see the event. A signal that breaks the sizing
contract (no legs, size above the strategy's cap) is dropped and counted, never published:
anything touching orders fails closed. Risk decisions for each strategy come back so that a
rejected entry is not later "closed", and a rejected exit restores the position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from hean.runtime.logic import Input, Output, ServiceLogic
from hean.strategies.base import Strategy
from hean_proto.events import Event, OrderUpdate, RiskDecision, Signal
from hean_proto.subjects import ORDER_UPDATE, RISK_DECISION, ROUTES

log = logging.getLogger("hean.strategy_engine")


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.registry = reg
        self.signals = Counter(
            "hean_signals_total", "Signals published.", ["strategy", "kind"], registry=reg
        )
        self.dropped = Counter(
            "hean_signals_dropped_total",
            "Signals refused by the engine's own checks (never published).",
            ["strategy", "reason"],
            registry=reg,
        )
        self.errors = Counter(
            "hean_strategy_errors_total",
            "Events a strategy raised on; the other strategies still ran.",
            ["strategy"],
            registry=reg,
        )
        self.open_positions = Gauge(
            "hean_strategy_open_positions",
            "Positions each strategy believes it holds.",
            ["strategy"],
            registry=reg,
        )
        self.rejected = Counter(
            "hean_strategy_risk_rejections_total",
            "Signals of this strategy that risk rejected.",
            ["strategy"],
            registry=reg,
        )
        self.unwound = Counter(
            "hean_strategy_units_unwound_total",
            "Entries the router unwound after a leg failed; the strategy dropped the unit.",
            ["strategy"],
            registry=reg,
        )


def check_signal(signal: Signal, cap: float) -> str | None:
    """Why a signal must not leave the engine, or None when it may."""
    if not signal.legs:
        return "no_legs"
    if signal.size_frac <= 0:
        return "zero_size"
    if not signal.reduce_only and signal.size_frac > cap + 1e-12:
        return "size_above_cap"
    return None


class StrategyEngineLogic(ServiceLogic):
    name = "strategy-engine"
    tick_interval_s = 5.0

    def __init__(
        self, strategies: Sequence[Strategy], metrics: EngineMetrics | None = None
    ) -> None:
        names = [s.name for s in strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        self.strategies = list(strategies)
        self.metrics = metrics or EngineMetrics()
        self.by_name = {s.name: s for s in self.strategies}
        self.intents: dict[str, tuple[str, str]] = {}
        """Approved intent id -> (strategy, signal id): an unwound intent is told to its owner."""

    def wanted_kinds(self) -> list[type[Event]]:
        kinds: list[type[Event]] = []
        for s in self.strategies:
            for k in s.inputs:
                if k not in kinds:
                    kinds.append(k)
        return kinds

    def inputs(self) -> list[Input]:
        # No queue group: strategies keep positions in memory, so replicas would split them.
        # Scale out by giving each instance its own symbols in the strategy settings.
        out = [Input(ROUTES[k].pattern(), (k,)) for k in self.wanted_kinds()]
        for s in self.strategies:
            out.append(Input(RISK_DECISION.pattern(s.name), (RiskDecision,)))
        out.append(Input(ORDER_UPDATE.pattern(), (OrderUpdate,)))
        return out

    def on_event(self, event: Event, now_ms: int) -> list[Output]:
        if isinstance(event, RiskDecision):
            self._on_decision(event, now_ms)
            return []
        if isinstance(event, OrderUpdate):
            self._on_order_update(event, now_ms)
            return []
        out: list[Output] = []
        for s in self.strategies:
            if not isinstance(event, s.inputs):
                continue
            try:
                signals = s.on_event(event, now_ms)
            except Exception:
                log.exception("strategy %s failed on %s", s.name, type(event).__name__)
                self.metrics.errors.labels(s.name).inc()
                continue
            out.extend(self._admit(s, signals))
        return out

    def _admit(self, strategy: Strategy, signals: Sequence[Signal]) -> list[Signal]:
        cap = getattr(getattr(strategy, "config", None), "max_size_frac", 0.02)
        admitted: list[Signal] = []
        for sig in signals:
            why = check_signal(sig, cap)
            if why is not None:
                log.error("dropping signal %s of %s: %s", sig.id, strategy.name, why)
                self.metrics.dropped.labels(strategy.name, why).inc()
                continue
            kind = "exit" if sig.reduce_only else "enter"
            self.metrics.signals.labels(strategy.name, kind).inc()
            log.info("signal %s %s %s: %s", strategy.name, kind, sig.symbol, sig.reason)
            admitted.append(sig)
        return admitted

    def _on_decision(self, d: RiskDecision, now_ms: int) -> None:
        s = self.by_name.get(d.strategy)
        if s is None:
            return
        if d.approved and d.intent_id:
            self.intents[d.intent_id] = (s.name, d.signal_id)
            while len(self.intents) > 100_000:
                self.intents.pop(next(iter(self.intents)))
        if not d.approved:
            self.metrics.rejected.labels(s.name).inc()
        hook = getattr(s, "on_decision", None)
        if hook is not None:
            hook(d, now_ms)

    def _on_order_update(self, u: OrderUpdate, now_ms: int) -> None:
        """The router unwound a unit (one leg failed): its strategy holds nothing there."""
        if u.status != "unwound":
            return
        owner = self.intents.pop(u.intent_id, None)
        if owner is None:
            return
        s = self.by_name.get(owner[0])
        hook = getattr(s, "on_unwound", None)
        if hook is not None:
            hook(owner[1], now_ms)
            self.metrics.unwound.labels(owner[0]).inc()

    def on_tick(self, now_ms: int) -> list[Output]:
        for s in self.strategies:
            positions = getattr(s, "open_positions", None)
            if positions is not None:
                self.metrics.open_positions.labels(s.name).set(len(positions()))
        return []

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"strategies_loaded": bool(self.strategies)}

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for s in self.strategies:
            positions = getattr(s, "open_positions", None)
            skips = getattr(s, "skips", None)
            out[s.name] = {
                "inputs": [k.__name__ for k in s.inputs],
                "open_positions": [
                    {"key": p.key, "legs": [f"{x.side} {x.instrument} {x.venue}" for x in p.legs]}
                    for p in (positions() if positions else [])
                ],
                "skips": dict(skips) if skips else {},
            }
        return out
