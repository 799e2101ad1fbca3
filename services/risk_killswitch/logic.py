"""Checks every signal and latches HALTED on drawdown, loss streaks and order rejections.

A thin binding of ``hean.risk.engine.RiskEngine`` to the runtime: signals come from a durable
consumer (none is lost while the service restarts; stale ones are rejected as expired),
decided as they are published rather than once stored (``hean.bus.early``: the stored copy is
acknowledged when the decision and intent are stored, and the router acts only on stored
intents), market data, positions, fills and order updates from plain subscriptions. The engine's
record is persisted by the process (see main) whenever it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hean.risk.engine import SERVICE, RiskEngine
from hean.runtime.logic import Input, Output, ServiceLogic
from hean_proto.events import (
    BookTop,
    ControlCommand,
    Event,
    Fill,
    OrderUpdate,
    Position,
    PriceTick,
    Signal,
)
from hean_proto.subjects import BOOK, CONTROL, FILL, ORDER_UPDATE, POSITION, PRICE, SIGNAL


class RiskKillswitchLogic(ServiceLogic):
    name = SERVICE
    tick_interval_s = 0.25

    def __init__(self, engine: RiskEngine | None = None) -> None:
        self.engine = engine or RiskEngine()
        self.restored = False
        self.on_change: Callable[[], None] | None = None

    def inputs(self) -> list[Input]:
        return [
            Input(SIGNAL.pattern(), (Signal,), durable="risk_killswitch", early=True),
            Input(PRICE.pattern(), (PriceTick,)),
            Input(BOOK.pattern(), (BookTop,)),
            Input(POSITION.pattern(), (Position,)),
            Input(FILL.pattern(), (Fill,)),
            Input(ORDER_UPDATE.pattern(), (OrderUpdate,)),
            Input(CONTROL.pattern(SERVICE), (ControlCommand,)),
        ]

    def on_event(self, event: Event, now_ms: int) -> Iterable[Output]:
        e = self.engine
        if isinstance(event, Signal):
            if not self.restored:  # the latch is not known yet: decide later
                raise RuntimeError("risk state not restored yet; signal refused")
            out = e.on_signal(event, now_ms)
        elif isinstance(event, PriceTick):
            out = e.on_price(event, now_ms)
        elif isinstance(event, BookTop):
            out = e.on_book(event, now_ms)
        elif isinstance(event, Position):
            out = e.on_position(event, now_ms)
        elif isinstance(event, Fill):
            out = e.on_fill(event, now_ms)
        elif isinstance(event, OrderUpdate):
            out = e.on_order_update(event, now_ms)
        elif isinstance(event, ControlCommand):
            out = self._control(event, now_ms)
        else:
            out = []
        self._changed()
        return out

    def _control(self, cmd: ControlCommand, now_ms: int) -> list[Output]:
        # resume is never taken from the bus: it needs the token (HTTP or the NATS endpoint)
        if cmd.command == "halt":
            return self.engine.halt(
                f"operator halt by {cmd.issued_by}" + (f": {cmd.reason}" if cmd.reason else ""),
                now_ms,
                issued_by=cmd.issued_by,
            )
        return []

    def on_tick(self, now_ms: int) -> Iterable[Output]:
        if not self.restored:
            return []
        out = self.engine.on_tick(now_ms)
        self._changed()
        return out

    def _changed(self) -> None:
        if self.engine.dirty and self.on_change is not None:
            self.on_change()

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"risk_state_restored": self.restored}

    def snapshot(self) -> dict[str, object]:
        return self.engine.snapshot()
