"""Collector logic: venue answers in, validated and normalised events out.

The I/O tasks in ``main`` poll the venues and hand each answer to this class with the current
time; it validates every item (bad ones become dead letters, the rest still flow), tracks
freshness, notices funding settlements to fetch, and computes cross-venue spreads. Nothing
here touches the network or the clock, so the tests drive it directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from msgspec.structs import replace
from prometheus_client import CollectorRegistry, Counter, Gauge

from hean.marketdata.spreads import (
    Quote,
    SpreadParams,
    all_spreads,
    fill_cost_bps,
    net_bps_per_8h,
)
from hean.marketdata.staleness import StalenessTracker
from hean.marketdata.validate import MarketLike, checked
from hean.runtime.logic import Output, ServiceLogic
from hean_proto import codec
from hean_proto.events import (
    Alert,
    BookTop,
    DeadLetter,
    Event,
    FundingRate,
    FundingSpread,
    Liquidation,
    OpenInterest,
    PriceTick,
)

DEFAULT_TAKER_FEE = 0.0006


@dataclass(frozen=True)
class CollectorConfig:
    stale_after_ms: int = 180_000
    """A value not refreshed for this long is marked stale (about three poll periods)."""
    snapshot_ms: int = 300_000
    """An unchanged funding estimate is republished (and so stored) at least this often."""
    spread_threshold_bps_8h: float = 3.0
    """Publish a spread when its net gain, amortised to 8 h, reaches this."""
    spread_alert_bps_8h: float = 50.0
    """Raise an alert when the net spread per 8 h reaches this."""
    horizon_hours: float = 72.0
    notional_usd: float = 10_000.0
    default_slippage_bps: float = 5.0
    symbols: tuple[str, ...] = ()
    exclude_symbols: tuple[str, ...] = ()
    symbol_pattern: str = ""
    settlement_attempts: int = 5


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.spread_bps = Gauge(
            "hean_cross_exchange_funding_spread_bps",
            "Cross-venue funding spread per 8 h equivalent, in bps, short venue minus long venue.",
            ["symbol", "long_venue", "short_venue"],
            registry=reg,
        )
        self.spread_net_bps = Gauge(
            "hean_cross_exchange_funding_net_bps",
            "Net gain of the spread over the holding horizon after fees and slippage, in bps.",
            ["symbol", "long_venue", "short_venue"],
            registry=reg,
        )
        self.rejected = Counter(
            "hean_collector_rejected_total",
            "Venue items refused as invalid (NaN, negative price, bad symbol...).",
            ["venue", "kind"],
            registry=reg,
        )
        self.collected = Counter(
            "hean_collector_events_total",
            "Validated market-data events published.",
            ["venue", "kind"],
            registry=reg,
        )
        self.stale = Gauge(
            "hean_marketdata_stale_symbols",
            "Symbols whose data stopped updating, per venue and kind.",
            ["venue", "kind"],
            registry=reg,
        )
        self.poll_errors = Counter(
            "hean_venue_poll_errors_total",
            "Failed venue requests, per venue and endpoint kind.",
            ["venue", "kind"],
            registry=reg,
        )
        self.last_poll = Gauge(
            "hean_venue_last_success_timestamp_seconds",
            "Wall time of the last successful poll, per venue and kind.",
            ["venue", "kind"],
            registry=reg,
        )


@dataclass
class _FundingState:
    last: FundingRate
    published_ms: int


@dataclass
class PendingSettlement:
    venue: str
    symbol: str
    funding_time_ms: int
    attempts: int = 0


@dataclass
class FundingCollectorLogic(ServiceLogic):
    venues: Sequence[str] = ("bybit", "binance", "okx")
    config: CollectorConfig = field(default_factory=CollectorConfig)
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)

    name = "funding-collector"
    tick_interval_s = 5.0

    def __post_init__(self) -> None:
        self.fees: dict[tuple[str, str], float] = {}
        self.markets: dict[str, dict[str, MarketLike]] = {}
        self.funding: dict[tuple[str, str], _FundingState] = {}
        self.latest: dict[tuple[str, str, str], Event] = {}
        self.books: dict[tuple[str, str], BookTop] = {}
        self.fresh = StalenessTracker(self.config.stale_after_ms)
        self.pending: dict[tuple[str, str, int], PendingSettlement] = {}
        self.settled_seen: set[tuple[str, str, int]] = set()
        self._spreads_dirty = False
        self._above: dict[tuple[str, str, str], FundingSpread] = {}
        self._pattern = (
            re.compile(self.config.symbol_pattern) if self.config.symbol_pattern else None
        )
        self.last_spreads: list[FundingSpread] = []

    # ------------------------------------------------------------------ configuration

    def wants(self, symbol: str) -> bool:
        """The configured symbol filter: allow list, deny list, then regular expression."""
        c = self.config
        if c.symbols and symbol not in c.symbols:
            return False
        if symbol in c.exclude_symbols:
            return False
        return not (self._pattern and not self._pattern.search(symbol))

    def set_markets(self, venue: str, markets: Iterable[MarketLike]) -> list[str]:
        """Record a venue's perpetuals (fees, intervals); returns the symbols to collect."""
        kept: dict[str, MarketLike] = {}
        for m in markets:
            if not m.active or not self.wants(m.symbol):
                continue
            kept[m.symbol] = m
            fee = m.taker_fee if m.taker_fee and m.taker_fee > 0 else DEFAULT_TAKER_FEE
            self.fees[(venue, m.symbol)] = fee
        self.markets[venue] = kept
        return sorted(kept)

    def symbols(self, venue: str) -> list[str]:
        return sorted(self.markets.get(venue, {}))

    def shared_symbols(self) -> list[str]:
        """Symbols listed on at least two venues: the ones a spread exists for."""
        count: dict[str, int] = {}
        for markets in self.markets.values():
            for s in markets:
                count[s] = count.get(s, 0) + 1
        return sorted(s for s, n in count.items() if n >= 2)

    # ------------------------------------------------------------------ validation

    def _reject(self, venue: str, kind: str, item: object, reason: str, now_ms: int) -> DeadLetter:
        self.metrics.rejected.labels(venue, kind).inc()
        try:
            payload = codec.encode(item) if isinstance(item, Event) else repr(item).encode()
        except Exception:
            payload = repr(item).encode(errors="replace")
        return DeadLetter(
            ts_ms=now_ms,
            service=self.name,
            subject=f"venue:{venue}:{kind}",
            reason=reason[:2000],
            payload=payload[:65536],
            payload_size=len(payload),
            truncated=len(payload) > 65536,
        )

    def _accept(
        self, venue: str, kind: str, items: Iterable[object], expected: type[Event], now_ms: int
    ) -> tuple[list[Event], list[Output]]:
        good: list[Event] = []
        bad: list[Output] = []
        for item in items:
            if not isinstance(item, expected):
                bad.append(self._reject(venue, kind, item, f"expected {expected.__name__}", now_ms))
                continue
            if getattr(item, "venue", venue) != venue:
                bad.append(self._reject(venue, kind, item, "event from another venue", now_ms))
                continue
            try:
                event = checked(item)
            except codec.DecodeError as exc:
                bad.append(self._reject(venue, kind, item, str(exc), now_ms))
                continue
            if not self.wants(event.symbol):  # type: ignore[attr-defined]
                continue
            good.append(event)
        return good, bad

    # ------------------------------------------------------------------ venue answers

    def on_funding(self, venue: str, rates: Iterable[object], now_ms: int) -> list[Output]:
        """Current funding estimates; republished on change or every ``snapshot_ms``."""
        good, out = self._accept(venue, "funding", rates, FundingRate, now_ms)
        for rate in good:
            assert isinstance(rate, FundingRate)
            key = (venue, rate.symbol)
            state = self.funding.get(key)
            self.fresh.touch(("funding", venue, rate.symbol), now_ms)
            if state is not None:
                prev_next = state.last.next_funding_ms
                if prev_next and rate.next_funding_ms and rate.next_funding_ms > prev_next:
                    pkey = (venue, rate.symbol, prev_next)
                    if pkey not in self.settled_seen:
                        self.pending.setdefault(
                            pkey, PendingSettlement(venue, rate.symbol, prev_next)
                        )
            changed = (
                state is None
                or state.last.rate != rate.rate
                or state.last.interval_hours != rate.interval_hours
                or state.last.next_funding_ms != rate.next_funding_ms
                or state.last.stale
            )
            due = state is None or now_ms - state.published_ms >= self.config.snapshot_ms
            fresh_rate = replace(rate, stale=False) if rate.stale else rate
            if changed or due:
                out.append(fresh_rate)
                self.metrics.collected.labels(venue, "funding").inc()
                self.funding[key] = _FundingState(fresh_rate, now_ms)
                self._spreads_dirty = True
            else:
                self.funding[key] = _FundingState(fresh_rate, state.published_ms)
        return out

    def on_settled(self, venue: str, rates: Iterable[object], now_ms: int) -> list[Output]:
        """Realised settlements from the venue's funding history; each published once."""
        good, out = self._accept(venue, "settlement", rates, FundingRate, now_ms)
        for rate in good:
            assert isinstance(rate, FundingRate)
            if not rate.funding_time_ms:
                out.append(self._reject(venue, "settlement", rate, "no funding_time_ms", now_ms))
                continue
            key = (venue, rate.symbol, rate.funding_time_ms)
            self.pending.pop(key, None)
            if key in self.settled_seen:
                continue
            self.settled_seen.add(key)
            out.append(replace(rate, settled=True, stale=False))
            self.metrics.collected.labels(venue, "settlement").inc()
        return out

    def settlements_due(self) -> list[PendingSettlement]:
        """Settlements noticed from a moving next-funding time, still to be fetched."""
        return sorted(self.pending.values(), key=lambda p: (p.venue, p.symbol, p.funding_time_ms))

    def settlement_missed(self, pending: PendingSettlement) -> None:
        """The venue did not (yet) return a settlement; give up after a few attempts."""
        key = (pending.venue, pending.symbol, pending.funding_time_ms)
        p = self.pending.get(key)
        if p is None:
            return
        p.attempts += 1
        if p.attempts >= self.config.settlement_attempts:
            del self.pending[key]

    def _simple(
        self, venue: str, kind: str, items: Iterable[object], cls: type[Event], now_ms: int
    ) -> list[Output]:
        good, out = self._accept(venue, kind, items, cls, now_ms)
        for event in good:
            symbol = event.symbol  # type: ignore[attr-defined]
            self.fresh.touch((kind, venue, symbol), now_ms)
            if getattr(event, "stale", False):
                event = replace(event, stale=False)  # type: ignore[type-var]
            self.latest[(kind, venue, symbol)] = event
            if isinstance(event, BookTop):
                self.books[(venue, symbol)] = event
            out.append(event)
            self.metrics.collected.labels(venue, kind).inc()
        return out

    def on_prices(self, venue: str, ticks: Iterable[object], now_ms: int) -> list[Output]:
        return self._simple(venue, "price", ticks, PriceTick, now_ms)

    def on_open_interest(self, venue: str, items: Iterable[object], now_ms: int) -> list[Output]:
        return self._simple(venue, "oi", items, OpenInterest, now_ms)

    def on_book(self, venue: str, books: Iterable[object], now_ms: int) -> list[Output]:
        out: list[Output] = []
        for book in books:
            crossed = (
                isinstance(book, BookTop)
                and book.bids
                and book.asks
                and book.bids[0].price >= book.asks[0].price
            )
            if crossed:
                out.append(self._reject(venue, "book", book, "crossed book", now_ms))
                continue
            out.extend(self._simple(venue, "book", [book], BookTop, now_ms))
        return out

    def on_liquidation(self, venue: str, items: Iterable[object], now_ms: int) -> list[Output]:
        good, out = self._accept(venue, "liquidation", items, Liquidation, now_ms)
        for event in good:
            self.metrics.collected.labels(venue, "liquidation").inc()
            out.append(event)
        return out

    def on_poll_error(self, venue: str, kind: str) -> None:
        self.metrics.poll_errors.labels(venue, kind).inc()

    # ------------------------------------------------------------------ time

    def on_tick(self, now_ms: int) -> list[Output]:
        out: list[Output] = self.mark_stale(now_ms)
        if self._spreads_dirty or out:
            out.extend(self.evaluate_spreads(now_ms))
        return out

    def mark_stale(self, now_ms: int) -> list[Output]:
        """One stale-marked copy of the last value for each key that just went stale."""
        out: list[Output] = []
        for key in self.fresh.newly_stale(now_ms):
            kind, venue, symbol = key  # type: ignore[misc]
            if kind == "funding":
                state = self.funding.get((venue, symbol))
                if state is not None:
                    marked = replace(state.last, stale=True)
                    self.funding[(venue, symbol)] = _FundingState(marked, now_ms)
                    out.append(marked)
                    self._spreads_dirty = True
            else:
                last = self.latest.get((kind, venue, symbol))
                if last is not None:
                    out.append(replace(last, stale=True))  # type: ignore[type-var]
        self._update_stale_gauge()
        return out

    def _update_stale_gauge(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for key in self.fresh.tracked():
            kind, venue, _ = key  # type: ignore[misc]
            counts.setdefault((venue, kind), 0)
        for key in self.fresh.stale_keys:
            kind, venue, _ = key  # type: ignore[misc]
            counts[(venue, kind)] = counts.get((venue, kind), 0) + 1
        for (venue, kind), n in counts.items():
            self.metrics.stale.labels(venue, kind).set(n)

    def is_stale(self, kind: str, venue: str, symbol: str, now_ms: int) -> bool:
        return self.fresh.is_stale((kind, venue, symbol), now_ms)

    # ------------------------------------------------------------------ spreads

    def quotes(self, now_ms: int) -> list[Quote]:
        out: list[Quote] = []
        for (venue, symbol), state in self.funding.items():
            rate = state.last
            book = self.books.get((venue, symbol))
            buy = sell = None
            if book is not None and not self.is_stale("book", venue, symbol, now_ms):
                buy = fill_cost_bps(book.bids, book.asks, "buy", self.config.notional_usd)
                sell = fill_cost_bps(book.bids, book.asks, "sell", self.config.notional_usd)
            out.append(
                Quote(
                    venue=venue,
                    symbol=symbol,
                    rate=rate.rate,
                    interval_hours=rate.interval_hours,
                    taker_fee=self.fees.get((venue, symbol), DEFAULT_TAKER_FEE),
                    ts_ms=rate.ts_ms,
                    stale=rate.stale or self.is_stale("funding", venue, symbol, now_ms),
                    buy_cost_bps=buy,
                    sell_cost_bps=sell,
                )
            )
        return out

    def evaluate_spreads(self, now_ms: int) -> list[Output]:
        """Spreads for every venue pair; published above the threshold and when they fall back.

        Pairs with a stale leg are not computed: a spread against a frozen rate is fiction.
        A pair that was above the threshold and lost a leg to staleness is republished once
        with ``stale=True`` so that consumers stop relying on it.
        """
        self._spreads_dirty = False
        c = self.config
        params = SpreadParams(c.horizon_hours, c.default_slippage_bps)
        spreads = all_spreads(self.quotes(now_ms), params, now_ms)
        self.last_spreads = spreads
        out: list[Output] = []
        current: set[tuple[str, str, str]] = set()
        for s in spreads:
            pair = (s.symbol, *sorted((s.long_venue, s.short_venue)))
            current.add(pair)
            self.metrics.spread_bps.labels(s.symbol, s.long_venue, s.short_venue).set(
                s.spread_bps_per_8h
            )
            self.metrics.spread_net_bps.labels(s.symbol, s.long_venue, s.short_venue).set(s.net_bps)
            per8 = net_bps_per_8h(s)
            if per8 >= c.spread_threshold_bps_8h:
                self._above[pair] = s
                out.append(s)
                if per8 >= c.spread_alert_bps_8h:
                    out.append(self._spread_alert(s, per8, now_ms))
            elif pair in self._above:
                del self._above[pair]
                out.append(s)  # crossed back below: tell consumers once
        for pair in [p for p in self._above if p not in current]:
            out.append(replace(self._above.pop(pair), ts_ms=now_ms, stale=True))
        return out

    def _spread_alert(self, s: FundingSpread, per8: float, now_ms: int) -> Alert:
        hour = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%d%H")
        return Alert(
            ts_ms=now_ms,
            key=f"spread:{s.symbol}:{s.long_venue}:{s.short_venue}:{hour}",
            kind="spread",
            severity="warning",
            title=f"Extreme funding spread on {s.symbol}",
            text=(
                f"long {s.long_venue} ({s.long_rate:.6f}/{s.long_interval_hours:g}h), "
                f"short {s.short_venue} ({s.short_rate:.6f}/{s.short_interval_hours:g}h): "
                f"{s.spread_bps_per_8h:.1f} bps per 8h gross, {per8:.1f} bps per 8h net "
                f"over {s.horizon_hours:g} h after {s.cost_bps:.1f} bps costs"
            ),
        )

    # ------------------------------------------------------------------ health

    def readiness(self, now_ms: int) -> dict[str, bool]:
        """Per venue: some funding data is fresh. A venue that went quiet turns this false."""
        fresh: dict[str, bool] = {f"funding_fresh_{v}": False for v in self.venues}
        for key in self.fresh.tracked():
            kind, venue, _ = key  # type: ignore[misc]
            if kind == "funding" and not self.fresh.is_stale(key, now_ms):
                fresh[f"funding_fresh_{venue}"] = True
        return fresh

    def snapshot(self) -> dict[str, object]:
        stale = sorted(f"{k[0]}:{k[1]}:{k[2]}" for k in self.fresh.stale_keys)  # type: ignore[index]
        return {
            "venues": {v: len(self.markets.get(v, {})) for v in self.venues},
            "funding_symbols": len(self.funding),
            "stale": stale[:200],
            "stale_count": len(stale),
            "pending_settlements": len(self.pending),
            "spreads_above_threshold": len(self._above),
        }
