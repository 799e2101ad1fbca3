"""Paper execution and accounting for backtests: fills, fees, slippage, funding, limits.

Fills happen at the price known at the signal's time; slippage is charged as its own cost
(``slippage_bps`` of each fill's notional) so that every dollar of PnL is attributed:

    pnl = funding + price_pnl - fees - slippage

where ``price_pnl`` is realised plus unrealised price PnL at fill prices before slippage.
Funding is paid or received on each perpetual leg at every settlement of its venue, on the
leg's notional at the mark price then: ``-qty * mark * rate`` (a long pays a positive rate).

Entry checks mirror the risk service's limits and fail closed: size above the per-trade cap,
gross exposure above its cap, unknown price or non-positive equity reject the signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hean.strategies.base import DEFAULT_VENUE_COSTS, VenueCosts
from hean_proto.events import Signal, SignalLeg


@dataclass(frozen=True)
class CostModel:
    venue_costs: dict[str, VenueCosts] = field(default_factory=lambda: dict(DEFAULT_VENUE_COSTS))
    default: VenueCosts = field(default_factory=VenueCosts)
    liquidity: str = "taker"
    """Which fee applies to fills: ``taker`` or ``maker``."""
    slippage_bps: float | None = None
    """Override of every venue's slippage per fill, in bps; None keeps the venue's."""

    def fee_bps(self, venue: str, instrument: str) -> float:
        c = self.venue_costs.get(venue, self.default)
        if instrument == "spot":
            return c.spot_taker_fee_bps if self.liquidity == "taker" else c.maker_fee_bps
        return c.taker_fee_bps if self.liquidity == "taker" else c.maker_fee_bps

    def slip_bps(self, venue: str) -> float:
        if self.slippage_bps is not None:
            return self.slippage_bps
        return self.venue_costs.get(venue, self.default).slippage_bps


@dataclass(frozen=True)
class Limits:
    max_size_frac: float = 0.02
    """Per trade and leg, like the risk service's default."""
    max_gross_frac: float = 1.0
    """Sum of all open legs' notional over equity."""


@dataclass
class Leg:
    venue: str
    symbol: str
    instrument: str
    qty: float
    """Signed base units; negative is short."""
    entry_price: float
    exit_price: float | None = None
    funding_usd: float = 0.0


@dataclass
class Trade:
    id: str
    strategy: str
    symbol: str
    opened_ms: int
    size_frac: float
    legs: list[Leg]
    reason: str
    closed_ms: int | None = None
    exit_reason: str = ""
    fees_usd: float = 0.0
    slippage_usd: float = 0.0
    notional_usd: float = 0.0

    @property
    def funding_usd(self) -> float:
        return sum(leg.funding_usd for leg in self.legs)

    def price_pnl(self, prices: dict[tuple[str, str], float] | None = None) -> float:
        total = 0.0
        for leg in self.legs:
            px = leg.exit_price
            if px is None and prices is not None:
                px = prices.get((leg.symbol, leg.instrument))
            if px is not None:
                total += leg.qty * (px - leg.entry_price)
        return total

    def matches_exit(self, legs: list[SignalLeg]) -> bool:
        mine = sorted(
            (x.venue, x.symbol, x.instrument, "buy" if x.qty > 0 else "sell") for x in self.legs
        )
        theirs = sorted(
            (x.venue, x.symbol, x.instrument, "sell" if x.side == "buy" else "buy") for x in legs
        )
        return mine == theirs


class Portfolio:
    def __init__(self, capital: float, costs: CostModel, limits: Limits) -> None:
        if capital <= 0:
            raise ValueError("capital must be positive")
        self.capital = capital
        self.costs = costs
        self.limits = limits
        self.open: list[Trade] = []
        self.closed: list[Trade] = []
        self.prices: dict[tuple[str, str], float] = {}
        """Latest (symbol, instrument) -> price; one price per symbol for every venue."""
        self.funding_usd = 0.0
        self.fees_usd = 0.0
        self.slippage_usd = 0.0
        self.realized_usd = 0.0
        self.turnover_usd = 0.0
        self.rejections: dict[str, int] = {}

    # ------------------------------------------------------------------ marks

    def set_price(self, symbol: str, perp: float, spot: float) -> None:
        self.prices[(symbol, "perp")] = perp
        self.prices[(symbol, "spot")] = spot

    def unrealized_usd(self) -> float:
        return sum(t.price_pnl(self.prices) for t in self.open)

    def price_pnl_usd(self) -> float:
        return self.realized_usd + self.unrealized_usd()

    def equity(self) -> float:
        return (
            self.capital
            + self.price_pnl_usd()
            + self.funding_usd
            - self.fees_usd
            - self.slippage_usd
        )

    def gross_usd(self) -> float:
        total = 0.0
        for t in self.open:
            for leg in t.legs:
                px = self.prices.get((leg.symbol, leg.instrument), leg.entry_price)
                total += abs(leg.qty) * px
        return total

    # ------------------------------------------------------------------ funding

    def settle_funding(self, venue: str, symbol: str, rate: float) -> float:
        """Pay or receive one settlement on every perpetual leg on (venue, symbol)."""
        mark = self.prices.get((symbol, "perp"))
        if mark is None:
            return 0.0
        paid = 0.0
        for t in self.open:
            for leg in t.legs:
                if leg.venue == venue and leg.symbol == symbol and leg.instrument == "perp":
                    amount = -leg.qty * mark * rate
                    leg.funding_usd += amount
                    paid += amount
        self.funding_usd += paid
        return paid

    # ------------------------------------------------------------------ execution

    def _reject(self, why: str) -> str:
        self.rejections[why] = self.rejections.get(why, 0) + 1
        return why

    def _fill_costs(self, trade: Trade, venue: str, instrument: str, notional: float) -> None:
        fee = notional * self.costs.fee_bps(venue, instrument) / 1e4
        slip = notional * self.costs.slip_bps(venue) / 1e4
        trade.fees_usd += fee
        trade.slippage_usd += slip
        self.fees_usd += fee
        self.slippage_usd += slip
        self.turnover_usd += notional

    def execute(self, signal: Signal, now_ms: int) -> str | None:
        """Apply a signal; returns None when filled or the reason it was rejected."""
        if signal.reduce_only:
            return self._exit(signal, now_ms)
        if signal.size_frac > self.limits.max_size_frac + 1e-12:
            return self._reject("size_above_cap")
        equity = self.equity()
        if equity <= 0:
            return self._reject("no_equity")
        prices = []
        for leg in signal.legs:
            px = self.prices.get((leg.symbol, leg.instrument))
            if px is None:
                return self._reject("price_unknown")
            prices.append(px)
        notional = signal.size_frac * equity
        added = sum(notional * leg.weight for leg in signal.legs)
        if self.gross_usd() + added > self.limits.max_gross_frac * equity + 1e-9:
            return self._reject("gross_exposure")
        trade = Trade(
            id=signal.id,
            strategy=signal.strategy,
            symbol=signal.symbol,
            opened_ms=now_ms,
            size_frac=signal.size_frac,
            legs=[],
            reason=signal.reason,
            notional_usd=notional,
        )
        for leg, px in zip(signal.legs, prices, strict=True):
            leg_notional = notional * leg.weight
            qty = leg_notional / px * (1.0 if leg.side == "buy" else -1.0)
            trade.legs.append(Leg(leg.venue, leg.symbol, leg.instrument, qty, px))
            self._fill_costs(trade, leg.venue, leg.instrument, leg_notional)
        self.open.append(trade)
        return None

    def _exit(self, signal: Signal, now_ms: int) -> str | None:
        for trade in self.open:
            if trade.symbol == signal.symbol and trade.matches_exit(signal.legs):
                self.close(trade, now_ms, signal.reason)
                return None
        return self._reject("nothing_to_close")

    def close(self, trade: Trade, now_ms: int, reason: str) -> None:
        for leg in trade.legs:
            px = self.prices.get((leg.symbol, leg.instrument), leg.entry_price)
            leg.exit_price = px
            self._fill_costs(trade, leg.venue, leg.instrument, abs(leg.qty) * px)
        self.realized_usd += trade.price_pnl()
        trade.closed_ms = now_ms
        trade.exit_reason = reason
        self.open.remove(trade)
        self.closed.append(trade)

    def close_all(self, now_ms: int, reason: str) -> None:
        for trade in list(self.open):
            self.close(trade, now_ms, reason)
