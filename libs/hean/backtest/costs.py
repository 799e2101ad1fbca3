"""What fills cost in a backtest: fees, a synthetic order book, and legs that fail alone.

History has no order books, so the paper venues of the live router fill against a synthetic
book rebuilt around the recorded price at every step:

* ``venue`` (default): no spread, unlimited depth at the recorded price; each venue's
  paper slippage (2 bps per fill) is the whole price impact.
* ``bps:N``: the same book, N bps of adverse slippage per fill on every venue.
* ``book:H:USD[:STEP[:LEVELS]]``: a ladder with the best bid/ask H bps from the recorded
  price, LEVELS levels (default 10) STEP bps apart (default 1), USD of notional on each
  level; no extra slippage. Orders walk it level by level as they would a live book, so
  large orders pay more, and what an order took is gone until the next step.

A two-leg unit can end up half-filled live (a venue refuses one leg, times out, or is down).
``leg_failure_prob`` makes the paper venue refuse a new, non-reduce-only leg with that
probability, decided by a hash of the seed and the leg's client order id: the same run
refuses the same legs, and nothing depends on the order legs are sent in. The live
executor then unwinds the filled leg, and the report charges what that cost.

Live, the legs of a unit go out together but do not fill at the same instant: the second
venue answers later, and the price has moved by then. ``leg_latency_ms`` makes every leg after
the first of a new unit fill that much later: its book is shifted by a log-price move drawn
from a normal distribution with the symbol's trailing realised volatility scaled to the delay
(a random walk; ``vol_per_sqrt_ms`` from bars before the fill only). The draw is a hash of the
seed and the client order id, like the failures. The move can help or hurt; the report shows
what it did (``late_leg_move_usd``) apart from slippage.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import msgspec

from hean.clock import Clock
from hean.execution.paper import PaperConfig, PaperVenue
from hean.strategies.base import DEFAULT_VENUE_COSTS, VenueCosts
from hean.venues.base import OrderRejected, OrderResult, VenuePosition
from hean_proto.events import BookLevel, BookTop

LEG_INDEX = re.compile(r"L(\d\d)$")
"""Intent legs end in their index (``hean.execution.ids.leg_order_id``)."""

UNLIMITED_USD = 1e12
MAX_LEVEL_SIZE = 1e14
"""Base units per level; the wire format refuses sizes above 1e15."""


@dataclass(frozen=True)
class BookModel:
    """A synthetic book around a recorded price; see the module docstring."""

    half_spread_bps: float = 0.0
    level_usd: float = UNLIMITED_USD
    step_bps: float = 1.0
    levels: int = 1

    def __post_init__(self) -> None:
        if self.half_spread_bps < 0 or self.step_bps < 0:
            raise ValueError("book spread and step must be >= 0 bps")
        if self.level_usd <= 0 or not 1 <= self.levels <= 200:
            raise ValueError("book levels need a positive size and 1..200 levels")

    def book(self, venue: str, symbol: str, price: float, ts_ms: int) -> BookTop:
        size = min(self.level_usd / price, MAX_LEVEL_SIZE)
        bids, asks = [], []
        for i in range(self.levels):
            off = (self.half_spread_bps + i * self.step_bps) / 1e4
            bids.append(BookLevel(price * (1 - off), size))
            asks.append(BookLevel(price * (1 + off), size))
        return BookTop(ts_ms=ts_ms, venue=venue, symbol=symbol, bids=bids, asks=asks)

    def describe(self) -> str:
        if self.level_usd >= UNLIMITED_USD:
            return f"flat book at the recorded price (half spread {self.half_spread_bps:g} bps)"
        return (
            f"{self.levels} levels of {self.level_usd:,.0f} USD, best {self.half_spread_bps:g} "
            f"bps from the recorded price, {self.step_bps:g} bps apart"
        )


@dataclass(frozen=True)
class CostModel:
    venue_costs: dict[str, VenueCosts] = field(default_factory=lambda: dict(DEFAULT_VENUE_COSTS))
    default: VenueCosts = field(default_factory=VenueCosts)
    liquidity: Literal["taker", "maker"] = "taker"
    """Which fee every fill pays (the paper venue crosses the book either way)."""
    slippage_bps: float | None = None
    """Adverse slippage per fill on every venue; None keeps each venue's own."""
    book: BookModel = field(default_factory=BookModel)
    leg_failure_prob: float = 0.0
    leg_latency_ms: float = 0.0
    """How much later than the first leg every other leg of a new unit fills."""
    seed: int = 7
    max_slippage_bps: float = 50.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.leg_failure_prob <= 1.0:
            raise ValueError("leg failure probability must be within 0..1")
        if not 0.0 <= self.leg_latency_ms <= 3_600_000:
            raise ValueError("leg latency must be within 0..3,600,000 ms")

    def fee_bps(self, venue: str) -> float:
        c = self.venue_costs.get(venue, self.default)
        return c.taker_fee_bps if self.liquidity == "taker" else c.maker_fee_bps

    def slip_bps(self, venue: str) -> float:
        if self.slippage_bps is not None:
            return self.slippage_bps
        return self.venue_costs.get(venue, self.default).slippage_bps

    def paper_config(self, venue: str) -> PaperConfig:
        return PaperConfig(
            taker_fee_bps=self.fee_bps(venue),
            slippage_bps=self.slip_bps(venue),
            max_slippage_bps=self.max_slippage_bps,
        )

    def spot_paper_config(self, venue: str) -> PaperConfig:
        """Spot legs: the venue's spot taker fee (spot has no maker rate here), the same
        slippage, and the book's half spread around the recorded spot price."""
        return PaperConfig(
            taker_fee_bps=self.venue_costs.get(venue, self.default).spot_taker_fee_bps,
            slippage_bps=self.slip_bps(venue),
            max_slippage_bps=self.max_slippage_bps,
            half_spread_bps=self.book.half_spread_bps,
        )

    def fails(self, client_order_id: str) -> bool:
        if self.leg_failure_prob <= 0:
            return False
        return _uniform(f"{self.seed}:{client_order_id}") < self.leg_failure_prob

    def late_leg_move(self, client_order_id: str, vol_per_sqrt_ms: float) -> float:
        """Log-price move during a late leg's delay; 0 for first legs and derived orders."""
        m = LEG_INDEX.search(client_order_id)
        if self.leg_latency_ms <= 0 or m is None or int(m.group(1)) == 0:
            return 0.0
        if not math.isfinite(vol_per_sqrt_ms) or vol_per_sqrt_ms <= 0:
            return 0.0
        u = _uniform(f"{self.seed}:latency:{client_order_id}")
        z = NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
        return z * vol_per_sqrt_ms * math.sqrt(self.leg_latency_ms)


def _uniform(key: str) -> float:
    raw = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(raw[:8], "big") / 2**64


def parse_slippage_model(text: str) -> tuple[float | None, BookModel]:
    """``venue``, ``bps:N`` or ``book:H:USD[:STEP[:LEVELS]]`` -> (slippage override, book)."""
    kind, _, rest = text.partition(":")
    if text == "venue":
        return None, BookModel()
    try:
        if kind == "bps" and rest:
            bps = float(rest)
            if not 0 <= bps <= 1000:
                raise ValueError("bps must be within 0..1000")
            return bps, BookModel()
        if kind == "book" and rest:
            parts = [float(x) for x in rest.split(":")]
            if not 2 <= len(parts) <= 4:
                raise ValueError("expected book:H:USD[:STEP[:LEVELS]]")
            step = parts[2] if len(parts) > 2 else 1.0
            levels = int(parts[3]) if len(parts) > 3 else 10
            return 0.0, BookModel(parts[0], parts[1], step, levels)
    except ValueError as exc:
        raise ValueError(f"--slippage-model {text!r}: {exc}") from None
    raise ValueError(
        f"--slippage-model {text!r}: expected 'venue', 'bps:N' or 'book:H:USD[:STEP[:LEVELS]]'"
    )


VolLookup = Callable[[str, int], float]
"""(symbol, now_ms) -> realised volatility of the log price per sqrt(ms), from the past."""


@dataclass(frozen=True)
class LateLeg:
    client_order_id: str
    symbol: str
    move: float
    """Log-price move applied to the book the leg filled against."""


class FailingLegs:
    """A paper venue whose legs fail or fill late as the cost model says; the rest passes.

    Reduce-only orders (exits, unwinds, flattening) are never refused nor delayed: the model is
    about a unit opening half-filled or at two prices, not about being unable to leave.
    """

    def __init__(
        self, paper: PaperVenue, costs: CostModel, clock: Clock, vol: VolLookup | None = None
    ) -> None:
        self.paper = paper
        self.costs = costs
        self.clock = clock
        self.vol = vol
        self.venue = paper.venue
        self.refused: list[str] = []
        self.late: dict[str, LateLeg] = {}

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
        if not reduce_only and self.costs.fails(client_order_id):
            self.refused.append(client_order_id)
            raise OrderRejected(self.venue, "create_order", "simulated leg failure")
        move = 0.0
        if not reduce_only and self.vol is not None:
            vol = self.vol(symbol, self.clock.now_ms())
            move = self.costs.late_leg_move(client_order_id, vol)
        if move == 0.0:
            return await self.paper.create_order(
                symbol, side, qty, client_order_id, price=price, reduce_only=reduce_only
            )
        # the book as it stands when the late leg arrives: every level moved by the same factor
        book = self.paper.book_for(symbol)
        factor = math.exp(move)
        self.paper.books[symbol] = _scaled(book, factor)
        try:
            result = await self.paper.create_order(
                symbol, side, qty, client_order_id, price=price, reduce_only=reduce_only
            )
        finally:
            self.paper.books[symbol] = _scaled(self.paper.books[symbol], 1.0 / factor)
        self.late[client_order_id] = LateLeg(client_order_id, symbol, move)
        return result

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderResult:
        return await self.paper.fetch_order(symbol, client_order_id)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderResult:
        return await self.paper.cancel_order(symbol, client_order_id)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]:
        return await self.paper.fetch_open_orders(symbol)

    async def fetch_positions(self) -> list[VenuePosition]:
        return await self.paper.fetch_positions()

    async def close(self) -> None:
        await self.paper.close()


def _scaled(book: BookTop, factor: float) -> BookTop:
    return msgspec.structs.replace(
        book,
        bids=[BookLevel(lv.price * factor, lv.size) for lv in book.bids],
        asks=[BookLevel(lv.price * factor, lv.size) for lv in book.asks],
    )
