"""Positions and PnL from fills, marks and funding payments.

A position keeps its signed quantity, average entry, realised PnL, fees and funding, all in
USD. Realised PnL moves only when a fill reduces or flips the position. The ledger remembers
how much of each client order it has applied, so a fill seen twice (a lookup after a crash,
a reconciliation) is applied once.

Positions are kept per instrument: a spot holding and a perpetual in the same symbol on the
same venue are two positions. Only perpetuals are charged or credited funding.
"""

from __future__ import annotations

import math

import msgspec

from hean_proto.events import Fill, FundingPayment, Position
from hean_proto.types import Instrument

EPS = 1e-12


def position_key(venue: str, symbol: str, instrument: str = "perp") -> str:
    """``venue:symbol`` for a perpetual, ``venue:symbol:spot`` for a spot holding.

    Perpetuals keep the two-part key so that books and risk records persisted before spot
    legs existed read back unchanged.
    """
    return f"{venue}:{symbol}" if instrument == "perp" else f"{venue}:{symbol}:{instrument}"


def split_key(key: str) -> tuple[str, str, Instrument]:
    """The inverse of ``position_key``."""
    venue, _, rest = key.partition(":")
    symbol, _, instrument = rest.partition(":")
    return venue, symbol, "spot" if instrument == "spot" else "perp"


class PositionBook(msgspec.Struct, kw_only=True):
    venue: str
    symbol: str
    instrument: Instrument = "perp"
    qty: float = 0.0
    entry_price: float | None = None
    mark_price: float | None = None
    realized_usd: float = 0.0
    fees_usd: float = 0.0
    funding_usd: float = 0.0
    last_funding_ms: int = 0
    opened_ms: int = 0
    """When the position last went from flat to open (the fill's time, the venue's clock)."""

    @property
    def unrealized_usd(self) -> float:
        if not self.qty or self.entry_price is None or self.mark_price is None:
            return 0.0
        return self.qty * (self.mark_price - self.entry_price)

    @property
    def net_usd(self) -> float:
        """Everything this position made or cost so far."""
        return self.realized_usd + self.unrealized_usd + self.funding_usd - self.fees_usd

    def apply(self, side: str, qty: float, price: float, fee_usd: float) -> float:
        """Apply one execution; returns the PnL it realised."""
        if qty <= 0 or not math.isfinite(qty) or not math.isfinite(price) or price <= 0:
            raise ValueError(f"bad execution {side} {qty} @ {price}")
        signed = qty if side == "buy" else -qty
        self.fees_usd += fee_usd
        realized = 0.0
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = abs(self.qty) + qty
            entry = self.entry_price or price
            self.entry_price = (abs(self.qty) * entry + qty * price) / total
            self.qty += signed
        else:
            closed = min(abs(self.qty), qty)
            direction = 1.0 if self.qty > 0 else -1.0
            realized = closed * (price - (self.entry_price or price)) * direction
            self.realized_usd += realized
            remainder = qty - closed
            self.qty += signed
            if abs(self.qty) < EPS:
                self.qty = 0.0
                self.entry_price = None
            elif remainder > EPS:
                self.entry_price = price
        if self.mark_price is None:
            self.mark_price = price
        return realized

    def event(self, ts_ms: int) -> Position:
        return Position(
            ts_ms=ts_ms,
            venue=self.venue,
            symbol=self.symbol,
            qty=self.qty,
            entry_price=self.entry_price,
            mark_price=self.mark_price,
            unrealized_usd=self.unrealized_usd,
            realized_usd=self.realized_usd,
            funding_usd=self.funding_usd,
            fees_usd=self.fees_usd,
            instrument=self.instrument,
        )


class Ledger(msgspec.Struct, kw_only=True):
    positions: dict[str, PositionBook] = msgspec.field(default_factory=dict)
    applied: dict[str, float] = msgspec.field(default_factory=dict)
    """Filled quantity already applied, per client order id."""
    fills: int = 0
    funding_payments: int = 0

    @staticmethod
    def key(venue: str, symbol: str, instrument: str = "perp") -> str:
        return position_key(venue, symbol, instrument)

    def position(self, venue: str, symbol: str, instrument: Instrument = "perp") -> PositionBook:
        k = self.key(venue, symbol, instrument)
        book = self.positions.get(k)
        if book is None:
            book = self.positions[k] = PositionBook(
                venue=venue, symbol=symbol, instrument=instrument
            )
        return book

    def qty(self, venue: str, symbol: str, instrument: str = "perp") -> float:
        book = self.positions.get(self.key(venue, symbol, instrument))
        return book.qty if book else 0.0

    def new_fill_qty(self, client_order_id: str, filled_qty: float) -> float:
        """How much of an order's cumulative fill is not yet in the ledger."""
        return max(0.0, filled_qty - self.applied.get(client_order_id, 0.0))

    def apply_fill(self, fill: Fill) -> Position:
        book = self.position(fill.venue, fill.symbol, fill.instrument)
        if not book.qty:
            book.opened_ms = fill.ts_ms
        book.apply(fill.side, fill.qty, fill.price, fill.fee_usd)
        self.applied[fill.client_order_id] = self.applied.get(fill.client_order_id, 0.0) + fill.qty
        self.fills += 1
        return book.event(fill.ts_ms)

    def mark(self, venue: str, symbol: str, price: float, instrument: str = "perp") -> None:
        book = self.positions.get(self.key(venue, symbol, instrument))
        if book is not None and math.isfinite(price) and price > 0:
            book.mark_price = price

    def apply_funding(
        self, venue: str, symbol: str, rate: float, mark: float, funding_time_ms: int, ts_ms: int
    ) -> tuple[FundingPayment, Position] | None:
        """Charge or credit one settlement; a long pays a positive rate, a short receives it.

        Only the perpetual is charged: a spot holding of the same symbol pays no funding.
        Returns nothing for a flat position or a settlement already charged.
        """
        book = self.positions.get(self.key(venue, symbol))
        if book is None or not book.qty or funding_time_ms <= book.last_funding_ms:
            return None
        return self._book(
            book, venue, symbol, rate, mark, -book.qty * mark * rate, funding_time_ms, ts_ms
        )

    def book_payment(
        self,
        venue: str,
        symbol: str,
        amount_usd: float,
        funding_time_ms: int,
        ts_ms: int,
        rate: float | None = None,
    ) -> tuple[FundingPayment, Position] | None:
        """Book a payment the venue reports (live trading): its own amount, each settlement once.

        Payments before the position was opened belong to someone else's trading on the same
        account and are left out. Returns nothing for those and for a settlement already booked.
        """
        book = self.positions.get(self.key(venue, symbol))
        if book is None or not math.isfinite(amount_usd):
            return None
        if funding_time_ms <= book.last_funding_ms or funding_time_ms < book.opened_ms:
            return None
        mark = book.mark_price or book.entry_price
        if not mark or mark <= 0:
            return None
        if rate is None:
            rate = -amount_usd / (book.qty * mark) if book.qty else 0.0
        return self._book(book, venue, symbol, rate, mark, amount_usd, funding_time_ms, ts_ms)

    def _book(
        self,
        book: PositionBook,
        venue: str,
        symbol: str,
        rate: float,
        mark: float,
        amount_usd: float,
        funding_time_ms: int,
        ts_ms: int,
    ) -> tuple[FundingPayment, Position]:
        """Credit one settlement to the position, once, and say so as events."""
        book.funding_usd += amount_usd
        book.last_funding_ms = funding_time_ms
        self.funding_payments += 1
        payment = FundingPayment(
            ts_ms=ts_ms,
            venue=venue,
            symbol=symbol,
            rate=rate,
            position_qty=book.qty,
            mark_price=mark,
            amount_usd=amount_usd,
            funding_time_ms=funding_time_ms,
        )
        return payment, book.event(ts_ms)

    def open_positions(self, instrument: str | None = None) -> list[PositionBook]:
        """Positions that hold something, of one instrument or of all."""
        return [
            p
            for p in self.positions.values()
            if p.qty and (instrument is None or p.instrument == instrument)
        ]

    def totals(self) -> dict[str, float]:
        books = list(self.positions.values())
        realized = sum(p.realized_usd for p in books)
        unrealized = sum(p.unrealized_usd for p in books)
        fees = sum(p.fees_usd for p in books)
        funding = sum(p.funding_usd for p in books)
        return {
            "realized_usd": realized,
            "unrealized_usd": unrealized,
            "funding_usd": funding,
            "fees_usd": fees,
            "net_usd": realized + unrealized + funding - fees,
            "gross_exposure_usd": sum(
                abs(p.qty) * (p.mark_price or p.entry_price or 0.0) for p in books
            ),
        }
