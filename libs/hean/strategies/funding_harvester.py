"""Funding harvester: collect funding on one perpetual while hedging its price exposure.

Entry: a ``FundingForecast`` says ENTER with confidence at or above ``min_confidence``, the
forecast has the sign of the current rate, and the funding expected over ``hold_hours`` (rate
normalised per hour, so 1 h, 4 h and 8 h venues compare) exceeds the round-trip fees and
slippage of both legs by ``min_edge_bps``. The perpetual side is the one that receives funding
(short when the rate is positive); the hedge is the spot leg on the same venue or the opposite
perpetual on ``hedge_venue``, whose own funding is charged against the edge.

Exit: the forecast says EXIT, or flips sign with enough confidence; a settled rate turns
against the position (funding flipped); the position's PnL (price of both legs plus funding
received) reaches the stop-loss or take-profit; or it has been held ``max_hold_hours``.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, ClassVar, Literal

from msgspec import Meta

from hean.strategies.base import (
    BPS,
    OpenPosition,
    StrategyBase,
    StrategyConfig,
    make_signal,
)
from hean_proto.events import Event, FundingForecast, FundingRate, PriceTick, Signal, SignalLeg

Hours = Annotated[float, Meta(gt=0, le=24 * 365)]


class HarvesterConfig(StrategyConfig, kw_only=True):
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.6
    hold_hours: Hours = 72.0
    """Expected holding time: the expected funding over it must pay the round trip."""
    min_edge_bps: Annotated[float, Meta(ge=0)] = 0.0
    """Expected funding net of costs over ``hold_hours`` must reach this, in bps."""
    hedge: Literal["spot", "perp"] = "spot"
    hedge_venue: str | None = None
    """For ``hedge="perp"``: the venue of the opposite perpetual (required then)."""
    allow_spot_short: bool = False
    """Negative funding needs a short spot hedge (margin borrowing); off by default."""
    max_hold_hours: Hours = 24.0 * 14
    stop_loss_frac: Annotated[float, Meta(ge=0, le=1)] | None = 0.03
    take_profit_frac: Annotated[float, Meta(ge=0, le=1)] | None = 0.02
    max_price_skew_s: Annotated[float, Meta(gt=0)] = 60.0
    """Stop-loss and take-profit use leg prices seen at most this far apart: one venue's new
    price against the other's old one is a phantom profit or loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hedge == "perp" and not self.hedge_venue:
            raise ValueError("hedge='perp' needs hedge_venue")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class FundingHarvester(StrategyBase):
    name: ClassVar[str] = "funding_harvester"
    inputs: ClassVar[tuple[type, ...]] = (FundingForecast, FundingRate, PriceTick)
    Config: ClassVar[type[StrategyConfig]] = HarvesterConfig
    config: HarvesterConfig

    def __init__(self, config: HarvesterConfig | dict | None = None) -> None:
        super().__init__(config)
        self.rates: dict[tuple[str, str], tuple[float, float]] = {}
        self.prices: dict[tuple[str, str], tuple[float, float]] = {}
        self.price_ts: dict[tuple[str, str], int] = {}
        self.skips: Counter[str] = Counter()
        """Why entries were not taken, by reason; the engine exports it as a metric."""

    # ------------------------------------------------------------------ dispatch

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:
        if isinstance(event, FundingForecast):
            return self._on_forecast(event, now_ms)
        if isinstance(event, FundingRate):
            return self._on_rate(event, now_ms)
        if isinstance(event, PriceTick):
            return self._on_price(event, now_ms)
        return []

    # ------------------------------------------------------------------ legs and prices

    def _hedge(self, venue: str) -> tuple[str, Literal["spot", "perp"]]:
        if self.config.hedge == "perp":
            return str(self.config.hedge_venue), "perp"
        return venue, "spot"

    def _leg_price(self, leg: SignalLeg) -> float | None:
        p = self.prices.get((leg.venue, leg.symbol))
        if p is None:
            return None
        mark, index = p
        return index if leg.instrument == "spot" else mark

    def _pnl_frac(self, pos: OpenPosition) -> float | None:
        """PnL of the position as a fraction of one leg's notional: both legs plus funding."""
        entries: dict[int, float] = pos.info["entry_prices"]
        total = pos.info["funding_frac"]
        seen = [self.price_ts.get((leg.venue, leg.symbol), -1) for leg in pos.legs]
        if min(seen) < 0 or max(seen) - min(seen) > self.config.max_price_skew_s * 1000:
            return None
        for i, leg in enumerate(pos.legs):
            price = self._leg_price(leg)
            if price is None or i not in entries:
                return None
            direction = 1.0 if leg.side == "buy" else -1.0
            total += direction * leg.weight * (price / entries[i] - 1.0)
        return total

    def _fill_entry_prices(self, pos: OpenPosition) -> None:
        for i, leg in enumerate(pos.legs):
            if i not in pos.info["entry_prices"]:
                price = self._leg_price(leg)
                if price is not None:
                    pos.info["entry_prices"][i] = price

    # ------------------------------------------------------------------ events

    def _on_price(self, e: PriceTick, now_ms: int) -> list[Signal]:
        if e.stale:
            return []
        self.prices[(e.venue, e.symbol)] = (e.mark, e.index if e.index is not None else e.mark)
        self.price_ts[(e.venue, e.symbol)] = e.ts_ms
        out: list[Signal] = []
        for pos in self.positions.values():
            if pos.symbol != e.symbol or all(leg.venue != e.venue for leg in pos.legs):
                continue
            self._fill_entry_prices(pos)
            out.extend(self._check_limits(pos, now_ms, e.ts_ms))
        return out

    def _on_rate(self, e: FundingRate, now_ms: int) -> list[Signal]:
        if e.stale:
            return []
        self.rates[(e.venue, e.symbol)] = (e.rate, e.interval_hours)
        if e.mark_price is not None and (e.venue, e.symbol) not in self.prices:
            self.prices[(e.venue, e.symbol)] = (e.mark_price, e.mark_price)
            self.price_ts[(e.venue, e.symbol)] = e.ts_ms
        if not e.settled:
            return []
        out: list[Signal] = []
        for pos in self.positions.values():
            if pos.symbol != e.symbol:
                continue
            for leg in pos.legs:
                if leg.venue == e.venue and leg.instrument == "perp":
                    direction = 1.0 if leg.side == "buy" else -1.0
                    pos.info["funding_frac"] -= direction * leg.weight * e.rate
            main = pos.legs[0]
            if main.venue == e.venue:
                receives = -(1.0 if main.side == "buy" else -1.0) * e.rate
                if receives < 0:
                    out.append(
                        self._exit(
                            pos,
                            now_ms,
                            ("flip", e.funding_time_ms or e.ts_ms),
                            f"EXIT: funding flipped, settled {e.rate * BPS:.2f} bps per "
                            f"{e.interval_hours:g}h on {e.venue} is now paid by the position",
                        )
                    )
                    continue
            out.extend(self._check_limits(pos, now_ms, e.ts_ms))
        return out

    def _check_limits(self, pos: OpenPosition, now_ms: int, trigger_ms: int) -> list[Signal]:
        if pos.key not in self.positions:
            return []
        c = self.config
        if now_ms - pos.opened_ms >= c.max_hold_hours * 3_600_000:
            return [
                self._exit(
                    pos, now_ms, ("maxhold", trigger_ms), f"EXIT: held {c.max_hold_hours:g}h"
                )
            ]
        pnl = self._pnl_frac(pos)
        if pnl is None:
            return []
        if c.stop_loss_frac is not None and pnl <= -c.stop_loss_frac:
            return [
                self._exit(
                    pos,
                    now_ms,
                    ("sl", trigger_ms),
                    f"EXIT: stop-loss, PnL {pnl * 100:.2f}% <= -{c.stop_loss_frac * 100:.2f}%",
                )
            ]
        if c.take_profit_frac is not None and pnl >= c.take_profit_frac:
            return [
                self._exit(
                    pos,
                    now_ms,
                    ("tp", trigger_ms),
                    f"EXIT: take-profit, PnL {pnl * 100:.2f}% >= {c.take_profit_frac * 100:.2f}%",
                )
            ]
        return []

    def _on_forecast(self, f: FundingForecast, now_ms: int) -> list[Signal]:
        key = f"{f.venue}:{f.symbol}"
        pos = self.positions.get(key)
        if pos is not None:
            return self._manage(pos, f, now_ms)
        if not self.config.enabled or not self.config.wants(f.symbol, f.venue):
            return []
        return self._maybe_enter(key, f, now_ms)

    def _manage(self, pos: OpenPosition, f: FundingForecast, now_ms: int) -> list[Signal]:
        ident = ("fc", f.venue, f.ts_ms, f.for_funding_ms)
        direction = pos.info["direction"]
        if f.action == "EXIT":
            return [self._exit(pos, now_ms, ident, f"EXIT: forecast says EXIT ({_describe(f)})")]
        against = _sign(f.predicted_rate) == direction and f.predicted_rate != 0
        if against and f.confidence >= self.config.min_confidence:
            return [self._exit(pos, now_ms, ident, f"EXIT: forecast flips ({_describe(f)})")]
        return self._check_limits(pos, now_ms, f.ts_ms)

    def edge_bps(self, f: FundingForecast) -> tuple[float, float, str | None]:
        """(expected funding over the hold, round-trip costs) in bps, or a reason not to trade."""
        c = self.config
        hedge_venue, hedge_instr = self._hedge(f.venue)
        hourly = abs(f.predicted_rate) / f.interval_hours
        if hedge_instr == "perp":
            known = self.rates.get((hedge_venue, f.symbol))
            if known is None:
                return 0.0, 0.0, "hedge_rate_unknown"
            # the hedge holds the opposite side: it pays what the main leg receives
            hourly -= _sign(f.predicted_rate) * known[0] / known[1]
        expected = hourly * c.hold_hours * BPS
        cost = c.leg_round_trip_bps(f.venue, "perp") + c.leg_round_trip_bps(
            hedge_venue, hedge_instr
        )
        return expected, cost, None

    def _maybe_enter(self, key: str, f: FundingForecast, now_ms: int) -> list[Signal]:
        c = self.config
        if f.action != "ENTER":
            return []
        if f.confidence < c.min_confidence:
            self.skips["low_confidence"] += 1
            return []
        if f.predicted_rate == 0 or _sign(f.predicted_rate) != _sign(f.current_rate):
            self.skips["sign_disagrees"] += 1
            return []
        direction = -_sign(f.predicted_rate)  # short perp when longs pay
        hedge_venue, hedge_instr = self._hedge(f.venue)
        if hedge_instr == "spot" and direction > 0 and not c.allow_spot_short:
            self.skips["needs_spot_short"] += 1
            return []
        expected, cost, why = self.edge_bps(f)
        if why is not None:
            self.skips[why] += 1
            return []
        if expected - cost < c.min_edge_bps or expected <= cost:
            self.skips["costs_exceed_funding"] += 1
            return []
        perp_side = "buy" if direction > 0 else "sell"
        hedge_side = "sell" if direction > 0 else "buy"
        legs = [
            SignalLeg(venue=f.venue, symbol=f.symbol, side=perp_side, instrument="perp"),
            SignalLeg(venue=hedge_venue, symbol=f.symbol, side=hedge_side, instrument=hedge_instr),
        ]
        reason = (
            f"ENTER: {_describe(f)}; expected funding {expected:.1f} bps over "
            f"{c.hold_hours:g}h vs round-trip costs {cost:.1f} bps; "
            f"{perp_side} perp on {f.venue}, {hedge_side} {hedge_instr} on {hedge_venue}"
        )
        signal = make_signal(
            strategy=self.name,
            symbol=f.symbol,
            kind="enter",
            now_ms=now_ms,
            legs=legs,
            size_frac=self.size_frac,
            confidence=f.confidence,
            reason=reason,
            id_parts=(f.venue, f.ts_ms, f.for_funding_ms),
            stop_loss_frac=c.stop_loss_frac,
            take_profit_frac=c.take_profit_frac,
        )
        pos = OpenPosition(
            key=key,
            symbol=f.symbol,
            legs=legs,
            entry_signal_id=signal.id,
            opened_ms=now_ms,
            size_frac=signal.size_frac,
            info={"direction": direction, "funding_frac": 0.0, "entry_prices": {}},
        )
        self._fill_entry_prices(pos)
        self.positions.open(pos)
        return [signal]


def _describe(f: FundingForecast) -> str:
    return (
        f"{f.venue} {f.symbol} now {f.current_rate * BPS:.2f}, forecast "
        f"{f.predicted_rate * BPS:.2f} bps per {f.interval_hours:g}h, "
        f"confidence {f.confidence:.2f}"
    )
