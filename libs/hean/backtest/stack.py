"""The live trading services, wired on an in-memory bus with a simulated clock.

strategy-engine (``StrategyEngineLogic``), funding-predictor (``FundingPredictorLogic``) or
liquidation-predictor (``LiquidationPredictorLogic``),
risk-killswitch (``RiskKillswitchLogic`` over ``RiskEngine``) and order-router
(``OrderRouterLogic`` with its paper venues, and the ``Executor`` consuming approved intents
the way the router's main does) each run in their own ``Runtime`` on one ``InMemoryBus``.
Events are encoded, routed by subject and decoded exactly as over NATS; only the transport
and the clock differ. The backtest publishes market data and reads what the services publish:
signals, decisions, intents, order updates, fills, positions and funding payments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hean.backtest.costs import CostModel, FailingLegs, VolLookup
from hean.bus.base import Message
from hean.bus.memory import InMemoryBus
from hean.clock import SimClock
from hean.execution.executor import ExecConfig, Executor
from hean.execution.gate import RiskGate
from hean.execution.paper import PaperVenue
from hean.execution.store import BookStore
from hean.risk.engine import RiskEngine
from hean.risk.limits import RiskLimits
from hean.runtime.core import Runtime
from hean.runtime.logic import ServiceLogic
from hean.strategies.base import Strategy
from hean_proto import codec
from hean_proto.events import (
    Alert,
    CascadeForecast,
    Event,
    Fill,
    FundingForecast,
    FundingPayment,
    OrderIntent,
    OrderUpdate,
    PriceTick,
    RiskDecision,
    RiskState,
    Signal,
)
from hean_proto.subjects import (
    ALERT,
    FILL,
    FUNDING_PAYMENT,
    ORDER_APPROVED,
    ORDER_UPDATE,
    PRED_CASCADE,
    PRED_FUNDING,
    RISK_DECISION,
    RISK_STATE,
    SIGNAL,
    subject_for,
)
from hean_services.order_router.logic import OrderRouterLogic
from hean_services.risk_killswitch.logic import RiskKillswitchLogic
from hean_services.strategy_engine.logic import StrategyEngineLogic


@dataclass
class Record:
    """Everything the services published that the report needs, in publish order."""

    signals: list[Signal] = field(default_factory=list)
    decisions: list[RiskDecision] = field(default_factory=list)
    intents: list[OrderIntent] = field(default_factory=list)
    updates: list[OrderUpdate] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    payments: list[FundingPayment] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    halts: list[RiskState] = field(default_factory=list)
    forecasts: list[FundingForecast] = field(default_factory=list)
    cascades: list[CascadeForecast] = field(default_factory=list)


class LiveStack:
    def __init__(
        self,
        strategies: Sequence[Strategy],
        venues: Sequence[str],
        limits: RiskLimits,
        costs: CostModel,
        start_ms: int,
        predictor: ServiceLogic | None = None,
        vol: VolLookup | None = None,
    ) -> None:
        self.clock = SimClock(start_ms)
        self.bus = InMemoryBus(clock=self.clock)
        self.costs = costs
        self.record = Record()
        self._last_state = "ACTIVE"
        self.engine = StrategyEngineLogic(list(strategies))
        self.risk = RiskKillswitchLogic(RiskEngine(limits))
        self.risk.restored = True  # a backtest starts from a fresh, ACTIVE record
        self.router = OrderRouterLogic(RiskGate())
        self.router.paper = {
            v: PaperVenue(v, self.clock, costs.paper_config(v)) for v in sorted(venues)
        }
        self.venues = {
            v: FailingLegs(p, costs, self.clock, vol) for v, p in self.router.paper.items()
        }
        # spot legs fill at the recorded spot price (each PriceTick's index)
        self.router.paper_spot = {
            v: PaperVenue(v, self.clock, costs.spot_paper_config(v), instrument="spot")
            for v in sorted(venues)
        }
        self.spot_venues = {
            v: FailingLegs(p, costs, self.clock, vol) for v, p in self.router.paper_spot.items()
        }
        self.spot_refs: dict[tuple[str, str, int], float] = {}
        """(venue, symbol, time) -> the spot price (index) published then: what a spot fill's
        slippage is measured from."""
        self.predictor = predictor
        self.runtimes = [
            Runtime(self.engine, self.bus, self.clock),
            Runtime(self.risk, self.bus, self.clock),
            Runtime(self.router, self.bus, self.clock),
        ]
        if predictor is not None:
            self.runtimes.append(Runtime(predictor, self.bus, self.clock))
        self.router_rt = self.runtimes[2]
        self.executor = Executor(
            self.venues,  # type: ignore[arg-type]
            BookStore(self.bus),
            self.router.book,
            self.router.gate,
            self.clock,
            self.router_rt.emit,
            ExecConfig(paper=True),
            spot=self.spot_venues,  # type: ignore[arg-type]
        )

    async def start(self) -> None:
        for rt in self.runtimes:
            await rt.start()
        await self.bus.subscribe(ORDER_APPROVED.pattern(), self._on_intent, durable="order_router")
        taps = (SIGNAL, RISK_DECISION, ORDER_APPROVED, ORDER_UPDATE, FILL, FUNDING_PAYMENT)
        for route in taps:
            await self.bus.subscribe(route.pattern(), self._tap)
        await self.bus.subscribe(ALERT.pattern(), self._tap)
        await self.bus.subscribe(PRED_FUNDING.pattern(), self._tap)
        await self.bus.subscribe(PRED_CASCADE.pattern(), self._tap)
        await self.bus.subscribe(RISK_STATE.pattern(), self._tap)

    async def _on_intent(self, message: Message) -> None:
        # as the router's main: decode, execute, acknowledge after execution
        intent = codec.decode_as(message.data, OrderIntent)
        await self.executor.execute(intent)

    async def _tap(self, message: Message) -> None:
        event = codec.decode(message.data)
        r = self.record
        kept = {
            Signal: r.signals,
            RiskDecision: r.decisions,
            OrderIntent: r.intents,
            OrderUpdate: r.updates,
            Fill: r.fills,
            FundingPayment: r.payments,
            FundingForecast: r.forecasts,
            CascadeForecast: r.cascades,
            Alert: r.alerts,
        }.get(type(event))
        if kept is not None:
            kept.append(event)
        elif isinstance(event, RiskState):
            if event.state == "HALTED" and self._last_state != "HALTED":
                r.halts.append(event)
            self._last_state = event.state

    async def publish(self, events: Sequence[Event]) -> None:
        """Market data into the bus, as the collector would publish it; then deliver all."""
        for e in events:
            if isinstance(e, PriceTick) and e.index is not None:
                self.spot_refs[(e.venue, e.symbol, e.ts_ms)] = e.index
            await self.bus.publish(subject_for(e), codec.encode(e))
        await self.bus.drain()

    async def tick(self, *logics: ServiceLogic) -> None:
        for rt in self.runtimes:
            if not logics or rt.logic in logics:
                await rt.tick()
        await self.bus.drain()

    async def flatten(self, tag: str) -> int:
        """Close everything with the live flatten (reduce-only orders through the venues)."""
        n = await self.executor.flatten(tag)
        await self.bus.drain()
        return n

    def equity(self) -> float:
        return self.risk.engine.limits.capital_usd + self.router.book.ledger.totals()["net_usd"]
