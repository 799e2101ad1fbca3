"""Liquidation hunter: ride a forecast liquidation cascade in its direction.

Entry: a ``CascadeForecast`` with probability at or above ``threshold``, a direction (down or
up), 15-minute momentum already moving that way by at least ``min_momentum_frac``, and a
positive expected edge after costs: ``p * take_profit - (1 - p) * stop_loss - round trip``
(taker fees and slippage in and out) must reach ``min_edge_bps``. Down means short, up means
long. Unclear direction (``none``, or momentum flat or against it) means no trade.

Exit ("after the cascade"): the probability falls below ``exit_probability``; a confident
forecast turns to the other direction; the price reaches the stop-loss or take-profit from
the entry price; or the position has been held ``max_hold_minutes``. Exits are reduce-only.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from hean.strategies.base import (
    BPS,
    OpenPosition,
    StrategyBase,
    StrategyConfig,
    closing_legs,
    make_signal,
)
from hean_proto.events import CascadeForecast, Event, PriceTick, Signal, SignalLeg

Prob = Annotated[float, Meta(ge=0, le=1)]


class HunterConfig(StrategyConfig, kw_only=True):
    threshold: Prob = 0.7
    exit_probability: Prob = 0.3
    min_momentum_frac: Annotated[float, Meta(ge=0, le=1)] = 0.003
    stop_loss_frac: Annotated[float, Meta(gt=0, le=1)] = 0.02
    take_profit_frac: Annotated[float, Meta(gt=0, le=1)] = 0.05
    max_hold_minutes: Annotated[float, Meta(gt=0)] = 24 * 60.0
    """Upper bound on holding; the shipped model forecasts one daily bar ahead."""
    min_edge_bps: Annotated[float, Meta(ge=0)] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exit_probability >= self.threshold:
            # otherwise every entry is closed by the very next forecast that let it in
            raise ValueError(
                f"exit_probability={self.exit_probability} must be below threshold={self.threshold}"
            )


class LiquidationHunter(StrategyBase):
    name: ClassVar[str] = "liquidation_hunter"
    inputs: ClassVar[tuple[type, ...]] = (CascadeForecast, PriceTick)
    Config: ClassVar[type[StrategyConfig]] = HunterConfig

    def __init__(self, config: HunterConfig | dict | None = None) -> None:
        super().__init__(config)
        self.cfg: HunterConfig = self.config  # type: ignore[assignment]
        self.marks: dict[tuple[str, str], float] = {}

    @staticmethod
    def _key(venue: str, symbol: str) -> str:
        return f"{venue}:{symbol}"

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:
        if isinstance(event, PriceTick):
            if event.stale:
                return []
            self.marks[(event.venue, event.symbol)] = float(event.mark)
            return self._price_exit(event, now_ms)
        if isinstance(event, CascadeForecast):
            if not self.cfg.enabled or not self.cfg.wants(event.symbol, event.venue):
                return []
            pos = self.positions.get(self._key(event.venue, event.symbol))
            if pos is not None:
                return self._forecast_exit(pos, event, now_ms)
            return self._entry(event, now_ms)
        return []

    # ------------------------------------------------------------------ entry

    def edge_bps(self, probability: float, venue: str) -> float:
        """Expected gain of one trade in bps after the round trip."""
        c = self.cfg
        gross = probability * c.take_profit_frac - (1 - probability) * c.stop_loss_frac
        return gross * BPS - self.cfg.round_trip_bps([venue])

    def _entry(self, f: CascadeForecast, now_ms: int) -> list[Signal]:
        c = self.cfg
        if f.probability < c.threshold or f.direction == "none":
            return []
        want = -1 if f.direction == "down" else 1
        if f.momentum_15m_frac * want < c.min_momentum_frac:
            return []  # momentum flat or against the forecast: direction unclear
        edge = self.edge_bps(f.probability, f.venue)
        if edge < c.min_edge_bps:
            return []
        side = "sell" if want < 0 else "buy"
        legs = [SignalLeg(venue=f.venue, symbol=f.symbol, side=side)]
        sig = make_signal(
            strategy=self.name,
            symbol=f.symbol,
            kind="enter",
            now_ms=now_ms,
            legs=legs,
            size_frac=self.size_frac,
            confidence=f.probability,
            reason=(
                f"cascade {f.direction} p={f.probability:.2f} momentum "
                f"{f.momentum_15m_frac:+.4f} edge {edge:.0f} bps ({f.model_version})"
            ),
            id_parts=(f.venue, f.direction, f.ts_ms),
            stop_loss_frac=c.stop_loss_frac,
            take_profit_frac=c.take_profit_frac,
        )
        self.positions.open(
            OpenPosition(
                key=self._key(f.venue, f.symbol),
                symbol=f.symbol,
                legs=legs,
                entry_signal_id=sig.id,
                opened_ms=now_ms,
                size_frac=self.size_frac,
                entry_price=self.marks.get((f.venue, f.symbol)),
                info={"venue": f.venue, "direction": f.direction},
            )
        )
        return [sig]

    # ------------------------------------------------------------------ exit

    def _exit(self, pos: OpenPosition, now_ms: int, why: str, confidence: float) -> list[Signal]:
        self.positions.close(pos.key)
        return [
            make_signal(
                strategy=self.name,
                symbol=pos.symbol,
                kind="exit",
                now_ms=now_ms,
                legs=closing_legs(pos.legs),
                size_frac=pos.size_frac,
                confidence=confidence,
                reason=why,
                id_parts=(pos.entry_signal_id,),
                reduce_only=True,
            )
        ]

    def _forecast_exit(self, pos: OpenPosition, f: CascadeForecast, now_ms: int) -> list[Signal]:
        c = self.cfg
        if now_ms - pos.opened_ms >= c.max_hold_minutes * 60_000:
            return self._exit(pos, now_ms, "max hold time reached", 1.0)
        if f.probability < c.exit_probability:
            return self._exit(pos, now_ms, f"cascade over: p={f.probability:.2f}", 1.0)
        if f.probability >= c.threshold and f.direction not in ("none", pos.info["direction"]):
            return self._exit(pos, now_ms, f"cascade turned {f.direction}", f.probability)
        return []

    def _price_exit(self, t: PriceTick, now_ms: int) -> list[Signal]:
        pos = self.positions.get(self._key(t.venue, t.symbol))
        if pos is None:
            return []
        if pos.entry_price is None:
            pos.entry_price = float(t.mark)
            return []
        sign = -1 if pos.info["direction"] == "down" else 1
        ret = sign * (float(t.mark) / pos.entry_price - 1.0)
        if ret <= -self.cfg.stop_loss_frac:
            return self._exit(pos, now_ms, f"stop-loss {ret:+.4f}", 1.0)
        if ret >= self.cfg.take_profit_frac:
            return self._exit(pos, now_ms, f"take-profit {ret:+.4f}", 1.0)
        if now_ms - pos.opened_ms >= self.cfg.max_hold_minutes * 60_000:
            return self._exit(pos, now_ms, "max hold time reached", 1.0)
        return []
