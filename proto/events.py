"""Every event HEAN puts on the wire.

Events are frozen msgspec Structs, tagged by class name in the ``type`` field, and carry a
``schema_version``. They travel as JSON so that ``nats sub 'hean.>'`` is readable. Units live
in field names (``_usd``, ``_ms``, ``_bps``, ``_frac``) or in the constrained types of
``hean_proto.types``. A funding rate is always a fraction per funding interval and always
travels with ``interval_hours``, because venues settle every 8 h, 4 h or 1 h.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from hean_proto.types import (
    Action,
    Fraction,
    FundingRateFraction,
    Instrument,
    IntervalHours,
    NonNegative,
    PriceUsd,
    Probability,
    Side,
    SignedAmount,
    TimestampMs,
    Token,
    TradingState,
)

SCHEMA_VERSION = 1


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Base of every wire event: when it happened and which schema it follows."""

    ts_ms: TimestampMs
    schema_version: int = SCHEMA_VERSION


# ----------------------------------------------------------------------------- market data


class FundingRate(Event, frozen=True, kw_only=True):
    """A venue's funding rate for one perpetual.

    ``settled`` tells a realised settlement (history, what was paid) from the venue's current
    estimate for the next settlement at ``next_funding_ms``.
    """

    venue: Token
    symbol: Token
    rate: FundingRateFraction
    interval_hours: IntervalHours
    settled: bool = False
    funding_time_ms: TimestampMs | None = None
    next_funding_ms: TimestampMs | None = None
    mark_price: PriceUsd | None = None
    index_price: PriceUsd | None = None
    stale: bool = False


class OpenInterest(Event, frozen=True, kw_only=True):
    """Open interest of one perpetual, in contracts and in USD notional."""

    venue: Token
    symbol: Token
    oi_usd: NonNegative
    oi_contracts: NonNegative | None = None
    stale: bool = False


class PriceTick(Event, frozen=True, kw_only=True):
    """Mark, index and last traded price of one perpetual."""

    venue: Token
    symbol: Token
    mark: PriceUsd
    index: PriceUsd | None = None
    last: PriceUsd | None = None
    stale: bool = False


class BookLevel(msgspec.Struct, frozen=True, array_like=True):
    """One order-book level as ``[price, size_base]``."""

    price: PriceUsd
    size: NonNegative


class BookTop(Event, frozen=True, kw_only=True):
    """Top N levels of one order book, best first; sizes in base units."""

    venue: Token
    symbol: Token
    bids: list[BookLevel]
    asks: list[BookLevel]
    stale: bool = False


class Liquidation(Event, frozen=True, kw_only=True):
    """One forced liquidation order; ``side`` is the liquidation order's side.

    A long being liquidated shows as a ``sell``.
    """

    venue: Token
    symbol: Token
    side: Side
    price: PriceUsd
    qty: NonNegative
    notional_usd: NonNegative


# ----------------------------------------------------------------------------- listings, spreads


class Listing(Event, frozen=True, kw_only=True):
    """A perpetual seen for the first time on a venue."""

    venue: Token
    symbol: Token
    venue_symbol: str
    listed_ms: TimestampMs | None = None
    first_seen_ms: TimestampMs
    interval_hours: IntervalHours | None = None


class FundingSpread(Event, frozen=True, kw_only=True):
    """A cross-venue funding spread for one canonical symbol, normalised to a common horizon.

    The long leg sits on the venue that pays less (or receives) funding, the short leg on the
    venue that receives more. ``net_bps`` is the expected gain over ``horizon_hours`` after
    both venues' taker fees and estimated slippage, for entering and leaving both legs.
    """

    symbol: Token
    long_venue: Token
    short_venue: Token
    long_rate: FundingRateFraction
    long_interval_hours: IntervalHours
    short_rate: FundingRateFraction
    short_interval_hours: IntervalHours
    spread_bps_per_8h: float
    spread_apr_frac: float
    horizon_hours: float
    gross_bps: float
    cost_bps: float
    net_bps: float
    stale: bool = False


# ----------------------------------------------------------------------------- predictions


class FundingForecast(Event, frozen=True, kw_only=True):
    """Forecast of the next settled funding rate with a calibrated interval."""

    venue: Token
    symbol: Token
    interval_hours: IntervalHours
    current_rate: FundingRateFraction
    predicted_rate: FundingRateFraction
    lower_rate: FundingRateFraction
    upper_rate: FundingRateFraction
    confidence: Probability
    action: Action
    model_version: str
    for_funding_ms: TimestampMs | None = None


class CascadeForecast(Event, frozen=True, kw_only=True):
    """Probability of a liquidation cascade on one symbol in the coming hour."""

    venue: Token
    symbol: Token
    probability: Probability
    direction: Literal["down", "up", "none"]
    model_version: str
    momentum_15m_frac: float = 0.0


# ----------------------------------------------------------------------------- trading


class SignalLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One leg of a signal: which instrument to buy or sell, as a share of the signal size."""

    venue: Token
    symbol: Token
    side: Side
    instrument: Instrument = "perp"
    weight: Fraction = 1.0


class Signal(Event, frozen=True, kw_only=True):
    """A strategy's wish to trade; the risk service decides whether it becomes an order.

    A multi-leg signal is atomic: risk approves or rejects all legs together and the router
    executes them as one unit. ``size_frac`` is the notional of each leg as a fraction of
    capital; stops are fractions of the entry price.
    """

    id: str
    strategy: Token
    symbol: Token
    legs: list[SignalLeg]
    size_frac: Fraction
    confidence: Probability
    stop_loss_frac: Fraction | None = None
    take_profit_frac: Fraction | None = None
    reduce_only: bool = False
    reason: str = ""


class IntentLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One order to place: quantity in base units, derived by risk from the signal size."""

    client_order_id: str
    venue: Token
    symbol: Token
    side: Side
    qty: NonNegative
    notional_usd: NonNegative
    instrument: Instrument = "perp"
    reduce_only: bool = False


class OrderIntent(Event, frozen=True, kw_only=True):
    """An order the risk service approved; the only input the router executes."""

    id: str
    signal_id: str
    strategy: Token
    symbol: Token
    legs: list[IntentLeg]
    reduce_only: bool = False
    stop_loss_frac: Fraction | None = None
    take_profit_frac: Fraction | None = None


class RiskDecision(Event, frozen=True, kw_only=True):
    """The risk verdict on one signal; every signal gets exactly one.

    A rejection is stored (``HEAN_DECISIONS``); an approval is recorded by its stored
    ``OrderIntent``, which carries the signal id, and this event only tells the strategy."""

    signal_id: str
    strategy: Token
    symbol: Token
    approved: bool
    reasons: list[str] = []
    intent_id: str | None = None

    @property
    def verdict(self) -> str:
        """The last subject token: only rejections are captured by a stream."""
        return "approved" if self.approved else "rejected"


class RiskState(Event, frozen=True, kw_only=True):
    """The trading state; published on every change and periodically as a liveness beacon."""

    state: TradingState
    reason: str
    seq: int
    equity_usd: float
    high_water_usd: float
    drawdown_frac: float
    daily_loss_frac: float = 0.0
    since_ms: TimestampMs


class OrderUpdate(Event, frozen=True, kw_only=True):
    """Lifecycle of one order, keyed by its client order id."""

    client_order_id: str
    intent_id: str
    venue: Token
    symbol: Token
    side: Side
    qty: NonNegative
    status: Literal[
        "in_flight",
        "open",
        "partially_filled",
        "filled",
        "canceled",
        "rejected",
        "unknown",
        "unwound",
    ]
    filled_qty: NonNegative = 0.0
    avg_price: PriceUsd | None = None
    venue_order_id: str | None = None
    reason: str = ""
    instrument: Instrument = "perp"


class Fill(Event, frozen=True, kw_only=True):
    """An execution; ``fee_usd`` is positive when paid."""

    fill_id: str
    client_order_id: str
    intent_id: str
    venue: Token
    symbol: Token
    side: Side
    qty: NonNegative
    price: PriceUsd
    fee_usd: SignedAmount
    liquidity: Literal["maker", "taker"] = "taker"
    paper: bool = True
    instrument: Instrument = "perp"


class Position(Event, frozen=True, kw_only=True):
    """A position after a change; ``qty`` is signed (negative = short), in base units.

    A spot position (``instrument="spot"``) is a holding of the base asset: never negative,
    never charged or credited funding.
    """

    venue: Token
    symbol: Token
    qty: SignedAmount
    entry_price: PriceUsd | None = None
    mark_price: PriceUsd | None = None
    unrealized_usd: SignedAmount = 0.0
    realized_usd: SignedAmount = 0.0
    funding_usd: SignedAmount = 0.0
    fees_usd: SignedAmount = 0.0
    instrument: Instrument = "perp"


class FundingPayment(Event, frozen=True, kw_only=True):
    """Funding paid (negative) or received (positive) on one position at one settlement."""

    venue: Token
    symbol: Token
    rate: FundingRateFraction
    position_qty: SignedAmount
    mark_price: PriceUsd
    amount_usd: SignedAmount
    funding_time_ms: TimestampMs


# ----------------------------------------------------------------------------- operations


class Alert(Event, frozen=True, kw_only=True):
    """Something a human should see; ``key`` deduplicates repeats of the same alert."""

    key: str
    kind: Literal["listing", "funding_spike", "spread", "risk", "service", "listing_summary"]
    severity: Literal["info", "warning", "critical"]
    title: str
    text: str


class DeadLetter(Event, frozen=True, kw_only=True):
    """A message a service could not accept, kept whole so nothing is lost."""

    service: str
    subject: str
    reason: str
    payload: bytes
    payload_size: int
    truncated: bool = False


class Heartbeat(Event, frozen=True, kw_only=True):
    """Liveness of one service instance."""

    service: str
    instance: str
    version: str
    ready: bool
    uptime_s: float
    seq: int


class ControlCommand(Event, frozen=True, kw_only=True):
    """An operator or risk command to a service (cancel all, flatten, resume)."""

    command: Literal["cancel_all", "flatten", "resume", "halt"]
    issued_by: str
    reason: str = ""


ALL_EVENTS: tuple[type[Event], ...] = (
    FundingRate,
    OpenInterest,
    PriceTick,
    BookTop,
    Liquidation,
    Listing,
    FundingSpread,
    FundingForecast,
    CascadeForecast,
    Signal,
    OrderIntent,
    RiskDecision,
    RiskState,
    OrderUpdate,
    Fill,
    Position,
    FundingPayment,
    Alert,
    DeadLetter,
    Heartbeat,
    ControlCommand,
)

AnyEvent = (
    FundingRate
    | OpenInterest
    | PriceTick
    | BookTop
    | Liquidation
    | Listing
    | FundingSpread
    | FundingForecast
    | CascadeForecast
    | Signal
    | OrderIntent
    | RiskDecision
    | RiskState
    | OrderUpdate
    | Fill
    | Position
    | FundingPayment
    | Alert
    | DeadLetter
    | Heartbeat
    | ControlCommand
)
