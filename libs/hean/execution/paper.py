"""A paper venue: the order half of the venue interface, filled against the live book.

Market orders walk the latest ``BookTop`` of their symbol level by level (consuming what they
take until the next book replaces it), pay the taker fee
and an extra adverse slippage, and never fill beyond ``max_slippage_bps`` from the best
price; whatever the book cannot take is cancelled (immediate-or-cancel). A book older than
``max_book_age_ms`` or marked stale refuses the order. Client order ids are unique per
venue, as on the real venues, so a resend shows up as ``DuplicateClientOrderId``.

A spot paper venue (``instrument="spot"``) holds the base asset: it refuses a sell beyond
what it holds (no borrowing). HEAN records no spot order books, so its book is rebuilt from
each venue index price (``on_index``, the venue's spot composite): best bid and ask
``half_spread_bps`` either side, one level deep enough for any order, and the same adverse
``slippage_bps`` on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

from hean.clock import Clock
from hean.venues.base import (
    DuplicateClientOrderId,
    OrderNotFound,
    OrderRejected,
    OrderResult,
    VenuePosition,
)
from hean_proto.events import BookLevel, BookTop, PriceTick
from hean_proto.types import Instrument

EPS = 1e-12
INDEX_BOOK_USD = 1e12
"""Notional of the single level of a book rebuilt from an index price: no depth limit."""


@dataclass
class PaperConfig:
    taker_fee_bps: float = 5.5
    slippage_bps: float = 1.0
    """Adverse price move added to every fill on top of walking the book."""
    max_slippage_bps: float = 50.0
    """Levels further than this from the best price are not taken."""
    max_book_age_ms: int = 10_000
    half_spread_bps: float = 1.0
    """Spot only: distance of the rebuilt best bid and ask from the index price."""


@dataclass
class PaperVenue:
    venue: str
    clock: Clock
    config: PaperConfig = field(default_factory=PaperConfig)
    books: dict[str, BookTop] = field(default_factory=dict)
    orders: dict[str, OrderResult] = field(default_factory=dict)
    positions: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    instrument: Instrument = "perp"

    def on_book(self, book: BookTop) -> None:
        self.books[book.symbol] = book

    def on_index(self, tick: PriceTick) -> None:
        """Spot: the book for ``tick.symbol`` rebuilt around the venue's index price."""
        if tick.index is None:
            return
        half = self.config.half_spread_bps / 1e4
        size = INDEX_BOOK_USD / tick.index
        self.books[tick.symbol] = BookTop(
            ts_ms=tick.ts_ms,
            venue=self.venue,
            symbol=tick.symbol,
            bids=[BookLevel(tick.index * (1 - half), size)],
            asks=[BookLevel(tick.index * (1 + half), size)],
            stale=tick.stale,
        )

    def book_for(self, symbol: str) -> BookTop:
        book = self.books.get(symbol)
        if book is None:
            raise OrderRejected(self.venue, "create_order", f"no order book for {symbol}")
        age = self.clock.now_ms() - book.ts_ms
        if book.stale or age > self.config.max_book_age_ms:
            raise OrderRejected(
                self.venue, "create_order", f"order book for {symbol} is stale ({age} ms old)"
            )
        return book

    async def create_order(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: float,
        client_order_id: str,
        *,
        price: float | None = None,
        reduce_only: bool = False,
    ) -> OrderResult:
        if client_order_id in self.orders:
            raise DuplicateClientOrderId(
                self.venue, "create_order", f"client order id {client_order_id} exists"
            )
        if qty <= 0:
            raise OrderRejected(self.venue, "create_order", f"quantity must be > 0, got {qty}")
        held = self.positions.get(symbol, 0.0)
        if reduce_only:
            reducing = (held > 0 and side == "sell") or (held < 0 and side == "buy")
            if not reducing:
                raise OrderRejected(self.venue, "create_order", "reduce-only order would open")
            qty = min(qty, abs(held))
        if self.instrument == "spot" and side == "sell" and qty > held + EPS:
            raise OrderRejected(
                self.venue,
                "create_order",
                f"insufficient balance: spot sell of {qty:.12g} {symbol} with {held:.12g} held "
                "(spot is not sold short)",
            )
        book = self.book_for(symbol)
        levels = book.asks if side == "buy" else book.bids
        if not levels:
            raise OrderRejected(self.venue, "create_order", f"empty {side} side for {symbol}")
        best = levels[0].price
        band = self.config.max_slippage_bps / 1e4
        worst = best * (1 + band) if side == "buy" else best * (1 - band)
        if price is not None:
            worst = min(worst, price) if side == "buy" else max(worst, price)
        remaining, cost = qty, 0.0
        left: list[BookLevel] = []
        for level in levels:
            inside = level.price <= worst if side == "buy" else level.price >= worst
            if remaining <= EPS or not inside:
                left.append(level)
                continue
            take = min(remaining, level.size)
            cost += take * level.price
            remaining -= take
            if level.size - take > EPS:
                left.append(BookLevel(level.price, level.size - take))
        filled = qty - max(remaining, 0.0)
        # what this order took is gone until the next book arrives
        self.books[symbol] = msgspec.structs.replace(
            book, **({"asks": left} if side == "buy" else {"bids": left})
        )
        self.seq += 1
        now = self.clock.now_ms()
        if filled <= EPS:
            result = OrderResult(
                venue=self.venue,
                symbol=symbol,
                client_order_id=client_order_id,
                venue_order_id=f"P{self.seq}",
                side=side,
                qty=qty,
                status="canceled",
                ts_ms=now,
                reason="no liquidity within the slippage band",
            )
            self.orders[client_order_id] = result
            return result
        slip = self.config.slippage_bps / 1e4
        avg = cost / filled * (1 + slip if side == "buy" else 1 - slip)
        fee = filled * avg * self.config.taker_fee_bps / 1e4
        self.positions[symbol] = held + (filled if side == "buy" else -filled)
        result = OrderResult(
            venue=self.venue,
            symbol=symbol,
            client_order_id=client_order_id,
            venue_order_id=f"P{self.seq}",
            side=side,
            qty=qty,
            status="filled" if remaining <= EPS else "canceled",
            filled_qty=filled,
            avg_price=avg,
            fee_usd=fee,
            ts_ms=now,
            reason="" if remaining <= EPS else "rest cancelled: book too thin",
        )
        self.orders[client_order_id] = result
        return result

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderResult:
        try:
            return self.orders[client_order_id]
        except KeyError:
            raise OrderNotFound(self.venue, "fetch_order", client_order_id) from None

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderResult:
        # paper orders are immediate-or-cancel: nothing is ever left open
        return await self.fetch_order(symbol, client_order_id)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        return []

    async def fetch_positions(self) -> list[VenuePosition]:
        return [
            VenuePosition(venue=self.venue, symbol=s, qty=q)
            for s, q in self.positions.items()
            if abs(q) > EPS
        ]

    async def close(self) -> None:
        return None
