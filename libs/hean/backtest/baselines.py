"""Naive baselines run through the same services: what doing the obvious thing would earn.

``NaiveCarry``: on the first settlement of every series, take the side that received it
(perp against a spot hedge on the same venue, or against the opposite perpetual on
``hedge_venue`` like the harvester's ``hedge="perp"``) and hold to the end. ``NaiveSpread``: on the
first positive spread of every symbol pair, long the cheap venue and short the rich one, and
hold to the end. Neither looks at costs or forecasts. Both carry the strategies' default
5 % stop-loss, which live risk requires of every entry.
"""

from __future__ import annotations

from typing import ClassVar

from hean.strategies.base import make_signal
from hean_proto.events import Event, FundingRate, FundingSpread, Signal, SignalLeg

STOP_LOSS = 0.05


class NaiveCarry:
    name: ClassVar[str] = "naive_carry"
    inputs: ClassVar[tuple[type, ...]] = (FundingRate,)

    def __init__(self, size_frac: float, hedge_venue: str | None = None) -> None:
        self.size_frac = size_frac
        self.hedge_venue = hedge_venue
        self.seen: set[tuple[str, str]] = set()

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:
        if not isinstance(event, FundingRate) or not event.settled or event.rate == 0:
            return []
        key = (event.venue, event.symbol)
        if key in self.seen or event.venue == self.hedge_venue:
            return []
        self.seen.add(key)
        perp = "sell" if event.rate > 0 else "buy"
        hedge = "buy" if event.rate > 0 else "sell"
        legs = [SignalLeg(venue=event.venue, symbol=event.symbol, side=perp)]
        if self.hedge_venue:
            legs.append(SignalLeg(venue=self.hedge_venue, symbol=event.symbol, side=hedge))
        else:
            legs.append(
                SignalLeg(venue=event.venue, symbol=event.symbol, side=hedge, instrument="spot")
            )
        return [
            make_signal(
                strategy=self.name,
                symbol=event.symbol,
                kind="enter",
                now_ms=now_ms,
                legs=legs,
                size_frac=self.size_frac,
                confidence=1.0,
                reason="naive: hold the side that received the first settlement",
                id_parts=key,
                stop_loss_frac=STOP_LOSS,
            )
        ]


class NaiveSpread:
    name: ClassVar[str] = "naive_spread"
    inputs: ClassVar[tuple[type, ...]] = (FundingSpread,)

    def __init__(self, size_frac: float) -> None:
        self.size_frac = size_frac
        self.seen: set[tuple[str, str, str]] = set()

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:
        if not isinstance(event, FundingSpread) or event.gross_bps <= 0:
            return []
        key = (event.symbol, *sorted((event.long_venue, event.short_venue)))
        if key in self.seen:
            return []
        self.seen.add(key)
        legs = [
            SignalLeg(venue=event.long_venue, symbol=event.symbol, side="buy"),
            SignalLeg(venue=event.short_venue, symbol=event.symbol, side="sell"),
        ]
        return [
            make_signal(
                strategy=self.name,
                symbol=event.symbol,
                kind="enter",
                now_ms=now_ms,
                legs=legs,
                size_frac=self.size_frac,
                confidence=1.0,
                reason="naive: hold the first positive spread",
                id_parts=key,
                stop_loss_frac=STOP_LOSS,
            )
        ]
