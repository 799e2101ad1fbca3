"""Market data, risk state and funding for the router; execution itself lives in main.

The logic keeps what the router needs to know between orders: the latest books (the paper
venues fill against them), marks for the ledger, each symbol's next funding time and rate,
and the latest risk state for the gate. Paper positions are charged or credited funding at
each venue's own funding times, from the settled rate when it arrives and otherwise from the
venue's estimate at the funding time (each settlement once). Spot holdings are marked at the
venue's index price and never charged funding; the paper spot venues fill against a book
rebuilt from that index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hean.execution.book import RouterBook
from hean.execution.gate import RiskGate
from hean.execution.paper import PaperVenue
from hean.runtime.logic import Input, Output, ServiceLogic
from hean_proto.events import BookTop, Event, FundingRate, PriceTick, RiskState
from hean_proto.subjects import BOOK, FUNDING, PRICE, RISK_STATE

NAME = "order-router"


@dataclass
class _Funding:
    next_ms: int
    rate: float
    interval_ms: int


class OrderRouterLogic(ServiceLogic):
    name = NAME
    tick_interval_s = 0.5

    def __init__(self, gate: RiskGate | None = None, paper: dict[str, PaperVenue] | None = None):
        self.gate = gate or RiskGate()
        self.paper = paper or {}
        self.paper_spot: dict[str, PaperVenue] = {}
        self.book = RouterBook()
        self.funding: dict[tuple[str, str], _Funding] = {}
        self.marks: dict[tuple[str, str], float] = {}
        self.reconciled = False
        self.live = False
        self.on_change: Callable[[], None] | None = None

    def inputs(self) -> list[Input]:
        return [
            Input(BOOK.pattern(), (BookTop,)),
            Input(PRICE.pattern(), (PriceTick,)),
            Input(FUNDING.pattern(), (FundingRate,)),
            Input(RISK_STATE.pattern(), (RiskState,)),
        ]

    def on_event(self, event: Event, now_ms: int) -> Iterable[Output]:
        if isinstance(event, RiskState):
            self.gate.on_state(event, now_ms)
        elif isinstance(event, BookTop):
            venue = self.paper.get(event.venue)
            if venue is not None:
                venue.on_book(event)
            if event.bids and event.asks and not event.stale:
                self._mark(
                    event.venue, event.symbol, (event.bids[0].price + event.asks[0].price) / 2
                )
        elif isinstance(event, PriceTick):
            spot = self.paper_spot.get(event.venue)
            if spot is not None:
                spot.on_index(event)
            if not event.stale:
                self._mark(event.venue, event.symbol, event.mark)
                if event.index is not None:
                    self.book.ledger.mark(event.venue, event.symbol, event.index, "spot")
        elif isinstance(event, FundingRate):
            return self._on_funding(event, now_ms)
        return ()

    def _mark(self, venue: str, symbol: str, price: float) -> None:
        self.marks[(venue, symbol)] = price
        self.book.ledger.mark(venue, symbol, price)

    def _on_funding(self, rate: FundingRate, now_ms: int) -> list[Output]:
        if rate.stale or self.live:  # live payments come from the venue, not from estimates
            return []
        key = (rate.venue, rate.symbol)
        if rate.settled and rate.funding_time_ms:
            return self._charge(rate.venue, rate.symbol, rate.rate, rate.funding_time_ms, now_ms)
        if rate.next_funding_ms:
            self.funding[key] = _Funding(
                rate.next_funding_ms, rate.rate, int(rate.interval_hours * 3_600_000)
            )
        return []

    def _charge(
        self, venue: str, symbol: str, rate: float, at_ms: int, now_ms: int
    ) -> list[Output]:
        mark = self.marks.get((venue, symbol))
        if mark is None:
            pos = self.book.ledger.positions.get(self.book.ledger.key(venue, symbol))
            mark = pos.mark_price or pos.entry_price if pos else None
        if not mark:
            return []
        charged = self.book.ledger.apply_funding(venue, symbol, rate, mark, at_ms, now_ms)
        if charged is None:
            return []
        if self.on_change is not None:
            self.on_change()
        return list(charged)

    def on_tick(self, now_ms: int) -> Iterable[Output]:
        out: list[Output] = []
        for (venue, symbol), f in self.funding.items():
            if f.next_ms <= now_ms:
                out += self._charge(venue, symbol, f.rate, f.next_ms, now_ms)
                while f.next_ms <= now_ms and f.interval_ms > 0:
                    f.next_ms += f.interval_ms
        return out

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"orders_reconciled": self.reconciled}

    def snapshot(self) -> dict[str, object]:
        g = self.gate
        return {
            "mode": "live" if self.live else "paper",
            "risk_state": g.state.state if g.state else None,
            "risk_latched_halt": g.latched_halt,
            "open_positions": len(self.book.ledger.open_positions()),
            "unsettled_orders": len(self.book.unsettled()),
            "pnl": {k: round(v, 4) for k, v in self.book.ledger.totals().items()},
        }
