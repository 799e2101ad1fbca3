"""Cross-venue funding arbitrage: long the perpetual where funding is cheap, short it where rich.

Both legs carry the same notional, so price moves cancel and the position earns the difference
of the two venues' funding. Rates are compared per hour (``rate / interval_hours``), which is
the only fair comparison between, say, a 4-hourly and an 8-hourly venue; settlements are then
accrued at each venue's own times.

Entry, from the collector's ``FundingSpread``: the gross spread over ``horizon_hours`` minus
the round trip of both legs (fees and slippage, the larger of this strategy's cost model and
the collector's book-based estimate), amortised to 8 h, must reach ``enter_net_bps_8h``.

Exit: the spread, recomputed from the latest rates of both venues (``FundingRate``) or read
from a new spread event, falls below ``exit_spread_bps_8h`` per 8 h in the position's favour
(closed) or turns against it (reversed); the position's PnL hits stop-loss or take-profit; or
it has been held ``max_hold_hours``. A stale spread never opens a position.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, ClassVar

from msgspec import Meta

from hean.strategies.base import (
    BPS,
    OpenPosition,
    StrategyBase,
    StrategyConfig,
    make_signal,
)
from hean_proto.events import Event, FundingRate, FundingSpread, PriceTick, Signal, SignalLeg

Hours = Annotated[float, Meta(gt=0, le=24 * 365)]


class ArbitrageConfig(StrategyConfig, kw_only=True):
    horizon_hours: Hours = 72.0
    """Expected holding time over which the spread must pay both legs' round trip."""
    enter_net_bps_8h: float = 2.0
    """Net gain after costs, amortised to 8 h, needed to enter."""
    exit_spread_bps_8h: float = 0.5
    """Gross spread per 8 h below which the position is closed."""
    use_event_costs: bool = True
    """Also consider the collector's book-based cost estimate (the larger one is used)."""
    max_hold_hours: Hours = 24.0 * 30
    stop_loss_frac: Annotated[float, Meta(ge=0, le=1)] | None = 0.03
    take_profit_frac: Annotated[float, Meta(ge=0, le=1)] | None = 0.05


def pair_key(symbol: str, venue_a: str, venue_b: str) -> str:
    a, b = sorted((venue_a, venue_b))
    return f"{symbol}:{a}:{b}"


class FundingArbitrage(StrategyBase):
    name: ClassVar[str] = "cross_venue_arb"
    inputs: ClassVar[tuple[type, ...]] = (FundingSpread, FundingRate, PriceTick)
    Config: ClassVar[type[StrategyConfig]] = ArbitrageConfig
    config: ArbitrageConfig

    def __init__(self, config: ArbitrageConfig | dict | None = None) -> None:
        super().__init__(config)
        self.rates: dict[tuple[str, str], tuple[float, float]] = {}
        self.prices: dict[tuple[str, str], float] = {}
        self.skips: Counter[str] = Counter()

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:
        if isinstance(event, FundingSpread):
            return self._on_spread(event, now_ms)
        if isinstance(event, FundingRate):
            return self._on_rate(event, now_ms)
        if isinstance(event, PriceTick):
            return self._on_price(event, now_ms)
        return []

    # ------------------------------------------------------------------ economics

    def costs_bps(self, s: FundingSpread) -> float:
        own = self.config.round_trip_bps([s.long_venue, s.short_venue])
        return max(own, s.cost_bps) if self.config.use_event_costs else own

    def net_bps_8h(self, s: FundingSpread) -> tuple[float, float, float]:
        """(spread per 8 h, gross over the horizon, net over the horizon), all in bps."""
        hourly = s.short_rate / s.short_interval_hours - s.long_rate / s.long_interval_hours
        h = self.config.horizon_hours
        gross = hourly * h * BPS
        net = gross - self.costs_bps(s)
        return hourly * 8 * BPS, gross, net

    def _oriented_spread_8h(self, pos: OpenPosition) -> float | None:
        """The position's spread per 8 h from the latest rates; None until both are known."""
        long = self.rates.get((pos.info["long_venue"], pos.symbol))
        short = self.rates.get((pos.info["short_venue"], pos.symbol))
        if long is None or short is None:
            return None
        return (short[0] / short[1] - long[0] / long[1]) * 8 * BPS

    # ------------------------------------------------------------------ events

    def _on_spread(self, s: FundingSpread, now_ms: int) -> list[Signal]:
        key = pair_key(s.symbol, s.long_venue, s.short_venue)
        pos = self.positions.get(key)
        if not s.stale:
            self.rates[(s.long_venue, s.symbol)] = (s.long_rate, s.long_interval_hours)
            self.rates[(s.short_venue, s.symbol)] = (s.short_rate, s.short_interval_hours)
        if pos is not None:
            if s.stale:
                return []
            return self._manage(pos, now_ms, ("spread", s.ts_ms))
        if not self.config.enabled or not self.config.wants(s.symbol):
            return []
        if not (
            self.config.wants(s.symbol, s.long_venue) and self.config.wants(s.symbol, s.short_venue)
        ):
            return []
        if s.stale:
            self.skips["stale"] += 1
            return []
        per8, gross, net = self.net_bps_8h(s)
        net8 = net * 8.0 / self.config.horizon_hours
        if net8 < self.config.enter_net_bps_8h:
            self.skips["costs_exceed_spread" if gross > 0 else "no_spread"] += 1
            return []
        return [self._enter(key, s, per8, gross, net, now_ms)]

    def _enter(
        self, key: str, s: FundingSpread, per8: float, gross: float, net: float, now_ms: int
    ) -> Signal:
        c = self.config
        legs = [
            SignalLeg(venue=s.long_venue, symbol=s.symbol, side="buy"),
            SignalLeg(venue=s.short_venue, symbol=s.symbol, side="sell"),
        ]
        reason = (
            f"ENTER: {s.symbol} long {s.long_venue} ({s.long_rate * BPS:.2f} bps/"
            f"{s.long_interval_hours:g}h), short {s.short_venue} ({s.short_rate * BPS:.2f} bps/"
            f"{s.short_interval_hours:g}h): spread {per8:.2f} bps per 8h, gross {gross:.1f} bps "
            f"over {c.horizon_hours:g}h, costs {self.costs_bps(s):.1f} bps, net {net:.1f} bps"
        )
        confidence = max(0.0, min(1.0, net / gross)) if gross > 0 else 0.0
        signal = make_signal(
            strategy=self.name,
            symbol=s.symbol,
            kind="enter",
            now_ms=now_ms,
            legs=legs,
            size_frac=self.size_frac,
            confidence=confidence,
            reason=reason,
            id_parts=(s.long_venue, s.short_venue, s.ts_ms),
            stop_loss_frac=c.stop_loss_frac,
            take_profit_frac=c.take_profit_frac,
        )
        pos = OpenPosition(
            key=key,
            symbol=s.symbol,
            legs=legs,
            entry_signal_id=signal.id,
            opened_ms=now_ms,
            size_frac=signal.size_frac,
            info={
                "long_venue": s.long_venue,
                "short_venue": s.short_venue,
                "funding_frac": 0.0,
                "entry_prices": {},
            },
        )
        self._fill_entry_prices(pos)
        self.positions.open(pos)
        return signal

    def _on_rate(self, e: FundingRate, now_ms: int) -> list[Signal]:
        if e.stale:
            return []
        self.rates[(e.venue, e.symbol)] = (e.rate, e.interval_hours)
        out: list[Signal] = []
        for pos in self.positions.values():
            if pos.symbol != e.symbol or e.venue not in (
                pos.info["long_venue"],
                pos.info["short_venue"],
            ):
                continue
            if e.settled:
                sign = 1.0 if e.venue == pos.info["short_venue"] else -1.0
                pos.info["funding_frac"] += sign * e.rate
            out.extend(self._manage(pos, now_ms, ("rate", e.venue, e.ts_ms)))
        return out

    def _on_price(self, e: PriceTick, now_ms: int) -> list[Signal]:
        if e.stale:
            return []
        self.prices[(e.venue, e.symbol)] = e.mark
        out: list[Signal] = []
        for pos in self.positions.values():
            if pos.symbol == e.symbol and e.venue in (
                pos.info["long_venue"],
                pos.info["short_venue"],
            ):
                self._fill_entry_prices(pos)
                out.extend(self._check_limits(pos, now_ms, ("price", e.venue, e.ts_ms)))
        return out

    # ------------------------------------------------------------------ position management

    def _fill_entry_prices(self, pos: OpenPosition) -> None:
        for leg in pos.legs:
            if leg.venue not in pos.info["entry_prices"] and (leg.venue, leg.symbol) in self.prices:
                pos.info["entry_prices"][leg.venue] = self.prices[(leg.venue, leg.symbol)]

    def pnl_frac(self, pos: OpenPosition) -> float | None:
        """Both legs' price PnL plus funding, as a fraction of one leg's notional."""
        total = pos.info["funding_frac"]
        for leg in pos.legs:
            entry = pos.info["entry_prices"].get(leg.venue)
            price = self.prices.get((leg.venue, leg.symbol))
            if entry is None or price is None:
                return None
            total += (1.0 if leg.side == "buy" else -1.0) * (price / entry - 1.0)
        return total

    def _manage(self, pos: OpenPosition, now_ms: int, ident: tuple) -> list[Signal]:
        per8 = self._oriented_spread_8h(pos)
        c = self.config
        if per8 is not None and per8 < 0:
            return [
                self._exit(pos, now_ms, ident, f"EXIT: spread reversed to {per8:.2f} bps per 8h")
            ]
        if per8 is not None and per8 < c.exit_spread_bps_8h:
            return [
                self._exit(
                    pos,
                    now_ms,
                    ident,
                    f"EXIT: spread closed to {per8:.2f} bps per 8h (< {c.exit_spread_bps_8h:g})",
                )
            ]
        return self._check_limits(pos, now_ms, ident)

    def _check_limits(self, pos: OpenPosition, now_ms: int, ident: tuple) -> list[Signal]:
        if pos.key not in self.positions:
            return []
        c = self.config
        if now_ms - pos.opened_ms >= c.max_hold_hours * 3_600_000:
            return [self._exit(pos, now_ms, ident, f"EXIT: held {c.max_hold_hours:g}h")]
        pnl = self.pnl_frac(pos)
        if pnl is None:
            return []
        if c.stop_loss_frac is not None and pnl <= -c.stop_loss_frac:
            return [self._exit(pos, now_ms, ident, f"EXIT: stop-loss, PnL {pnl * 100:.2f}%")]
        if c.take_profit_frac is not None and pnl >= c.take_profit_frac:
            return [self._exit(pos, now_ms, ident, f"EXIT: take-profit, PnL {pnl * 100:.2f}%")]
        return []
