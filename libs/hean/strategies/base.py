"""The strategy contract shared by the live strategy-engine and the backtester.

A strategy is a plain class fed decoded events plus the current time, returning signals. It
never reads a clock, a socket or a file, so the backtester can replay history through the very
object that trades live and get the same signals for the same events.

Conventions every strategy follows:

* ``name``: the registry key and the ``Signal.strategy`` value (a subject-safe token).
* ``inputs``: the event classes it wants; the engine subscribes to exactly these.
* ``on_event(event, now_ms)``: returns zero or more signals; ``now_ms`` is the injected clock.
* ``Config``: a class attribute naming its config struct (a subclass of ``StrategyConfig``);
  the constructor takes one instance of it (or ``None`` for the defaults).
* Signal ids are deterministic (``signal_id``): the same events give the same ids, which is
  what lets risk and the router deduplicate a re-delivered signal.
* Optionally ``on_decision(decision, now_ms)``: told when risk rejected one of its signals so
  that a position it assumed open can be forgotten (fail closed: no exit for what never opened).
* Optionally ``open_positions()``: the positions the strategy believes it holds, for snapshots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

import msgspec
from msgspec import Meta

from hean_proto.events import Event, RiskDecision, Signal, SignalLeg

BPS = 1e4
DEFAULT_MAX_SIZE_FRAC = 0.02
"""Never more than 2 % of capital per trade unless a config raises it explicitly."""

MAX_PENDING_EXITS = 1024
"""Exits remembered for rollback; older ones were long since decided."""

Frac = Annotated[float, Meta(ge=0.0, le=1.0)]
Bps = Annotated[float, Meta(ge=0.0, le=1000.0)]


class VenueCosts(msgspec.Struct, frozen=True, kw_only=True):
    """Per-venue trading costs used by cost-aware entry rules, in basis points."""

    taker_fee_bps: Bps = 5.5
    maker_fee_bps: Bps = 2.0
    slippage_bps: Bps = 2.0
    spot_taker_fee_bps: Bps = 10.0


DEFAULT_VENUE_COSTS: dict[str, VenueCosts] = {
    "binance": VenueCosts(taker_fee_bps=5.0, maker_fee_bps=2.0, slippage_bps=2.0),
    "bybit": VenueCosts(taker_fee_bps=5.5, maker_fee_bps=2.0, slippage_bps=2.0),
    "okx": VenueCosts(taker_fee_bps=5.0, maker_fee_bps=2.0, slippage_bps=2.0),
}


class StrategyConfig(msgspec.Struct, kw_only=True):
    """Settings every strategy understands.

    ``symbols``/``venues`` empty means all. ``size_frac`` is the notional per leg as a fraction
    of capital; it is capped by ``max_size_frac`` so a typo cannot size a trade at 50 %.
    """

    enabled: bool = True
    symbols: list[str] = msgspec.field(default_factory=list)
    venues: list[str] = msgspec.field(default_factory=list)
    size_frac: Frac = DEFAULT_MAX_SIZE_FRAC
    max_size_frac: Frac = DEFAULT_MAX_SIZE_FRAC
    stop_loss_frac: Frac | None = 0.05
    take_profit_frac: Frac | None = None
    costs: dict[str, VenueCosts] = msgspec.field(default_factory=lambda: dict(DEFAULT_VENUE_COSTS))
    default_costs: VenueCosts = msgspec.field(default_factory=VenueCosts)

    def __post_init__(self) -> None:
        if self.size_frac > self.max_size_frac:
            raise ValueError(
                f"size_frac={self.size_frac} exceeds max_size_frac={self.max_size_frac}"
            )

    def wants(self, symbol: str, venue: str | None = None) -> bool:
        """Whether this strategy should trade ``symbol`` (and ``venue`` when given)."""
        if self.symbols and symbol not in self.symbols:
            return False
        return venue is None or not self.venues or venue in self.venues

    def venue_costs(self, venue: str) -> VenueCosts:
        return self.costs.get(venue, self.default_costs)

    def leg_round_trip_bps(self, venue: str, instrument: str = "perp") -> float:
        """Taker fee plus slippage to enter and later leave one leg, in bps of its notional."""
        c = self.venue_costs(venue)
        fee = c.spot_taker_fee_bps if instrument == "spot" else c.taker_fee_bps
        return 2.0 * (fee + c.slippage_bps)

    def round_trip_bps(self, venues: Sequence[str]) -> float:
        """Round-trip costs of one perpetual leg on each of ``venues``, in bps."""
        return sum(self.leg_round_trip_bps(v) for v in venues)


@runtime_checkable
class Strategy(Protocol):
    """What the engine and the backtester drive."""

    name: str
    inputs: tuple[type, ...]

    def on_event(self, event: Any, now_ms: int) -> list[Signal]: ...


StrategyFactory = Any
"""``Callable[[StrategyConfig | Mapping | None], Strategy]``; see ``hean.strategies.build``."""


def signal_id(strategy: str, symbol: str, kind: str, *parts: object) -> str:
    """A deterministic id (32 hex chars) from what makes a signal unique.

    32 letters and digits fit every venue's client-order-id limit, so risk can derive order ids
    from it. The same strategy, symbol, kind and parts always give the same id.
    """
    raw = "|".join([strategy, symbol, kind, *(str(p) for p in parts)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def make_signal(
    *,
    strategy: str,
    symbol: str,
    kind: str,
    now_ms: int,
    legs: Sequence[SignalLeg],
    size_frac: float,
    confidence: float,
    reason: str,
    id_parts: Sequence[object] = (),
    stop_loss_frac: float | None = None,
    take_profit_frac: float | None = None,
    reduce_only: bool = False,
) -> Signal:
    """Build a Signal with a deterministic id; ``kind`` is e.g. ``enter`` or ``exit``.

    The id is made from ``kind`` and ``id_parts`` (the identity of the triggering event, such
    as its venue and timestamp), not from ``now_ms``, so a re-delivered event yields the same id.
    """
    return Signal(
        ts_ms=now_ms,
        id=signal_id(strategy, symbol, kind, *id_parts),
        strategy=strategy,
        symbol=symbol,
        legs=list(legs),
        size_frac=max(0.0, min(1.0, size_frac)),
        confidence=max(0.0, min(1.0, confidence)),
        stop_loss_frac=stop_loss_frac,
        take_profit_frac=take_profit_frac,
        reduce_only=reduce_only,
        reason=reason,
    )


def closing_legs(legs: Sequence[SignalLeg]) -> list[SignalLeg]:
    """The legs that undo ``legs``: same instruments, opposite sides."""
    return [
        SignalLeg(
            venue=leg.venue,
            symbol=leg.symbol,
            side="sell" if leg.side == "buy" else "buy",
            instrument=leg.instrument,
            weight=leg.weight,
        )
        for leg in legs
    ]


@dataclass
class OpenPosition:
    """A position a strategy believes it holds since it emitted the entry signal."""

    key: str
    symbol: str
    legs: list[SignalLeg]
    entry_signal_id: str
    opened_ms: int
    size_frac: float
    entry_price: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


class PositionBook:
    """Positions per key, with rollback when risk rejects the entry or the exit."""

    def __init__(self) -> None:
        self._by_key: dict[str, OpenPosition] = {}
        self._closing: dict[str, OpenPosition] = {}

    def get(self, key: str) -> OpenPosition | None:
        return self._by_key.get(key)

    def open(self, pos: OpenPosition) -> None:
        self._by_key[pos.key] = pos

    def close(self, key: str, exit_signal_id: str | None = None) -> OpenPosition | None:
        """Forget a position; with ``exit_signal_id`` it comes back if risk rejects the exit."""
        pos = self._by_key.pop(key, None)
        if pos is not None and exit_signal_id is not None:
            self._closing[exit_signal_id] = pos
            while len(self._closing) > MAX_PENDING_EXITS:
                self._closing.pop(next(iter(self._closing)))
        return pos

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def values(self) -> list[OpenPosition]:
        return list(self._by_key.values())

    def drop_entry(self, signal_id: str) -> OpenPosition | None:
        for key, pos in list(self._by_key.items()):
            if pos.entry_signal_id == signal_id:
                return self._by_key.pop(key)
        return None

    def on_decision(self, decision: RiskDecision) -> OpenPosition | None:
        """Undo what a rejected signal assumed: drop a rejected entry, restore a rejected exit."""
        closing = self._closing.pop(decision.signal_id, None)
        if decision.approved:
            return None
        if closing is not None:
            self._by_key[closing.key] = closing
            return closing
        return self.drop_entry(decision.signal_id)


def config_from(cls: type[StrategyConfig], value: StrategyConfig | Mapping[str, Any] | None):
    """Turn a mapping (from settings or a CLI) into a config struct, with a clear error."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return msgspec.convert(dict(value), cls, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"{cls.__name__}: {exc}") from None
    raise TypeError(f"{cls.__name__}: expected a mapping or {cls.__name__}, got {type(value)}")


class StrategyBase:
    """Optional base giving the common plumbing; strategies may also implement the protocol."""

    name: ClassVar[str] = "strategy"
    inputs: ClassVar[tuple[type, ...]] = ()
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig | Mapping[str, Any] | None = None) -> None:
        self.config = config_from(self.Config, config)
        self.positions = PositionBook()

    def on_event(self, event: Event, now_ms: int) -> list[Signal]:  # pragma: no cover
        raise NotImplementedError

    def on_decision(self, decision: RiskDecision, now_ms: int) -> None:
        self.positions.on_decision(decision)

    def on_unwound(self, signal_id: str, now_ms: int) -> None:
        """The router unwound this entry after a leg failed: the unit never opened."""
        self.positions.drop_entry(signal_id)

    def open_positions(self) -> list[OpenPosition]:
        return self.positions.values()

    @property
    def size_frac(self) -> float:
        return min(self.config.size_frac, self.config.max_size_frac)

    def _exit(self, pos: OpenPosition, now_ms: int, ident: tuple, reason: str) -> Signal:
        """The reduce-only signal that closes ``pos``; its id derives from the entry's."""
        signal = make_signal(
            strategy=self.name,
            symbol=pos.symbol,
            kind="exit",
            now_ms=now_ms,
            legs=closing_legs(pos.legs),
            size_frac=pos.size_frac,
            confidence=1.0,
            reason=reason,
            id_parts=(pos.entry_signal_id, *ident),
            reduce_only=True,
        )
        self.positions.close(pos.key, signal.id)
        return signal
