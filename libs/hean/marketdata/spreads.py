"""Cross-venue funding spreads, normalised to a common horizon and net of trading costs.

Venues settle funding every 8 h, 4 h or 1 h, so two quoted rates are only comparable after
converting both to a rate per hour. For one canonical symbol on venues A and B:

    hourly_X      = rate_X / interval_hours_X
    spread/h      = hourly_short - hourly_long            (short the venue that pays more)
    spread_bps_8h = spread/h * 8 * 1e4
    spread_apr    = spread/h * 24 * 365
    gross_bps     = spread/h * horizon_hours * 1e4
    cost_bps      = 2 * (taker_long + taker_short) * 1e4  (enter and leave both legs)
                  + 2 * (slippage_long_bps + slippage_short_bps)
    net_bps       = gross_bps - cost_bps

A positive funding rate means longs pay shorts, so shorting the higher hourly rate and
longing the lower one collects the difference while the two legs hedge the price. Whether
the spread is worth trading is judged on ``net_bps`` amortised back to 8 h, because a 3 bps
per 8 h spread rarely pays for two legs of taker fees unless held for days.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from hean_proto.events import BookLevel, FundingSpread

BPS = 1e4
HOURS_PER_YEAR = 24 * 365


def per_hour(rate: float, interval_hours: float) -> float:
    """Funding fraction per hour from a rate quoted per ``interval_hours``."""
    if not interval_hours or interval_hours <= 0 or not math.isfinite(interval_hours):
        raise ValueError(f"interval_hours must be a positive number, got {interval_hours!r}")
    if not math.isfinite(rate):
        raise ValueError(f"funding rate must be finite, got {rate!r}")
    return rate / interval_hours


def per_8h(rate: float, interval_hours: float) -> float:
    """The rate an 8-hourly venue would quote for the same hourly funding."""
    return per_hour(rate, interval_hours) * 8.0


def annualised(rate: float, interval_hours: float) -> float:
    """Simple (not compounded) yearly funding fraction."""
    return per_hour(rate, interval_hours) * HOURS_PER_YEAR


def slippage_bps(levels: Sequence[BookLevel], notional_usd: float) -> float | None:
    """Cost in bps of the mid-to-VWAP distance to take ``notional_usd`` from one book side.

    ``levels`` are best first. Returns None when the side is empty or too thin to fill the
    notional, because a made-up number would hide that the size does not fit the book.
    """
    if not levels or notional_usd <= 0:
        return None if not levels else 0.0
    best = levels[0].price
    remaining = notional_usd
    cost_qty = 0.0
    spent = 0.0
    for level in levels:
        take_usd = min(remaining, level.price * level.size)
        if take_usd <= 0:
            continue
        qty = take_usd / level.price
        cost_qty += qty
        spent += take_usd
        remaining -= take_usd
        if remaining <= 1e-9:
            break
    if remaining > 1e-9 or cost_qty <= 0:
        return None
    vwap = spent / cost_qty
    return abs(vwap - best) / best * BPS


def half_spread_bps(bids: Sequence[BookLevel], asks: Sequence[BookLevel]) -> float | None:
    """Half the quoted bid/ask spread in bps of the mid: what crossing it costs per fill."""
    if not bids or not asks:
        return None
    bid, ask = bids[0].price, asks[0].price
    mid = (bid + ask) / 2
    if mid <= 0 or ask < bid:
        return None
    return (ask - bid) / 2 / mid * BPS


def fill_cost_bps(
    bids: Sequence[BookLevel], asks: Sequence[BookLevel], side: str, notional_usd: float
) -> float | None:
    """Estimated cost of one taker fill against the mid: half spread plus book walk."""
    half = half_spread_bps(bids, asks)
    walk = slippage_bps(asks if side == "buy" else bids, notional_usd)
    if half is None or walk is None:
        return None
    return half + walk


@dataclass(frozen=True)
class Quote:
    """One venue's current funding for a symbol plus what trading it costs there."""

    venue: str
    symbol: str
    rate: float
    interval_hours: float
    taker_fee: float
    ts_ms: int
    stale: bool = False
    buy_cost_bps: float | None = None
    """Slippage of buying the notional (from the book); None when unknown."""
    sell_cost_bps: float | None = None

    @property
    def hourly(self) -> float:
        return per_hour(self.rate, self.interval_hours)


@dataclass(frozen=True)
class SpreadParams:
    horizon_hours: float = 72.0
    """How long a position is expected to be held; fees are amortised over it."""
    default_slippage_bps: float = 5.0
    """Per fill, used when a venue's book is unknown or too thin."""


def spread(a: Quote, b: Quote, params: SpreadParams, now_ms: int) -> FundingSpread:
    """The spread between two venues for one symbol, oriented so that it is non-negative."""
    if a.symbol != b.symbol:
        raise ValueError(f"spread across different symbols: {a.symbol} vs {b.symbol}")
    if a.venue == b.venue:
        raise ValueError(f"spread needs two venues, got {a.venue} twice")
    short, long = (a, b) if a.hourly >= b.hourly else (b, a)
    diff_h = short.hourly - long.hourly
    h = params.horizon_hours
    fees_bps = 2 * (long.taker_fee + short.taker_fee) * BPS

    def slip(value: float | None) -> float:
        return params.default_slippage_bps if value is None else value

    # entering buys the long leg and sells the short leg; leaving does the reverse
    slip_bps = (
        slip(long.buy_cost_bps)
        + slip(long.sell_cost_bps)
        + slip(short.sell_cost_bps)
        + slip(short.buy_cost_bps)
    )
    gross = diff_h * h * BPS
    cost = fees_bps + slip_bps
    return FundingSpread(
        ts_ms=now_ms,
        symbol=a.symbol,
        long_venue=long.venue,
        short_venue=short.venue,
        long_rate=long.rate,
        long_interval_hours=long.interval_hours,
        short_rate=short.rate,
        short_interval_hours=short.interval_hours,
        spread_bps_per_8h=diff_h * 8 * BPS,
        spread_apr_frac=diff_h * HOURS_PER_YEAR,
        horizon_hours=h,
        gross_bps=gross,
        cost_bps=cost,
        net_bps=gross - cost,
        stale=a.stale or b.stale,
    )


def net_bps_per_8h(s: FundingSpread) -> float:
    """Net gain amortised to an 8 h period: the figure compared with the threshold."""
    return s.net_bps * 8.0 / s.horizon_hours


def all_spreads(quotes: Iterable[Quote], params: SpreadParams, now_ms: int) -> list[FundingSpread]:
    """Every venue pair for every symbol quoted on at least two venues (stale quotes excluded)."""
    by_symbol: dict[str, list[Quote]] = {}
    for q in quotes:
        if q.stale:
            continue
        by_symbol.setdefault(q.symbol, []).append(q)
    out: list[FundingSpread] = []
    for symbol in sorted(by_symbol):
        group = sorted(by_symbol[symbol], key=lambda q: q.venue)
        for a, b in combinations(group, 2):
            out.append(spread(a, b, params, now_ms))
    return out
