"""The simulated market: prices, funding, open interest, books and liquidations per venue.

State moves in fixed steps of simulated time drawn from one seeded generator, so a scenario
and seed give the same market at the same simulated time however fast the wall clock runs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np

from hean.sim.scenario import VENUES, Scenario, ScriptedEvent, SymbolSpec

H_MS = 3_600_000
# a venue's own persistent funding offset and price basis, per 8 h and as a fraction of price
VENUE_RATE_OFFSET = {"binance": 0.0, "bybit": 0.00002, "okx": -0.00002}
VENUE_BASIS = {"binance": 0.0, "bybit": 0.0001, "okx": -0.0001}
# share of normal depth left during a cascade on the side its forced orders hit, and the other
CASCADE_HIT_SIDE_DEPTH = 0.2
CASCADE_OTHER_SIDE_DEPTH = 0.5


@dataclass
class LiquidationPrint:
    ts_ms: int
    venue: str
    symbol: str
    side: str
    """The liquidated order's side: ``sell`` closes a long."""
    price: float
    qty: float


@dataclass
class Series:
    """One perpetual on one venue."""

    venue: str
    base: str
    interval_h: float
    listed_ms: int
    spec: SymbolSpec
    rate: float = 0.0
    next_funding_ms: int = 0
    oi_scale: float = 1.0
    """Open interest in position units relative to the start (venues count contracts)."""
    oi_ref_price: float = 0.0
    """Price at which ``spec.oi_usd`` holds: OI in units is ``spec.oi_usd / oi_ref_price``."""
    settled: list[tuple[int, float, float]] = field(default_factory=list)
    """(funding time ms, rate, mark price) of every settlement so far."""
    oi_history: list[tuple[int, float, float]] = field(default_factory=list)
    """(hour ms, open interest USD, mark) recorded on every hour boundary."""
    replay: list[tuple[int, float]] | None = None
    replay_pos: int = 0

    @property
    def symbol(self) -> str:
        return f"{self.base}USDT"


class Market:
    """Everything observable about the simulated venues at the current simulated time."""

    def __init__(self, scenario: Scenario, start_ms: int) -> None:
        self.scenario = scenario
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.step_ms = int(scenario.step_s * 1000)
        self.rng = np.random.default_rng(scenario.seed)
        self.price: dict[str, float] = {}
        self.specs: dict[str, SymbolSpec] = {}
        self.series: dict[tuple[str, str], Series] = {}
        self.liquidations: dict[str, deque[LiquidationPrint]] = {v: deque() for v in VENUES}
        self.liq_seq = 0
        self.events = sorted(scenario.events, key=lambda e: e.at_s)
        self.event_pos = 0
        self.active: list[tuple[int, int, ScriptedEvent]] = []
        self.settle_listeners: list = []
        self.kline_closes: dict[str, list[tuple[int, float]]] = {}
        self._pending_liqs: list[tuple[int, ScriptedEvent]] = []
        for spec in scenario.symbols:
            self._add_symbol(spec, listed_ms=self._listed_ms(spec))

    def _listed_ms(self, spec: SymbolSpec) -> int:
        if spec.listed_at_s is None:
            # long-listed: a fixed date well before any start
            return 1_567_965_300_000
        return self.start_ms + int(spec.listed_at_s * 1000)

    def _add_symbol(self, spec: SymbolSpec, listed_ms: int) -> None:
        self.specs[spec.base] = spec
        self.price.setdefault(spec.base, spec.price)
        for venue, interval_h in spec.venues.items():
            s = Series(venue, spec.base, interval_h, listed_ms, spec)
            s.oi_ref_price = spec.price
            s.rate = self._mean(s)
            s.next_funding_ms = self._next_funding(max(self.now_ms, listed_ms), interval_h)
            self.series[(venue, s.symbol)] = s

    @staticmethod
    def _next_funding(t_ms: int, interval_h: float) -> int:
        step = int(interval_h * H_MS)
        return (t_ms // step + 1) * step

    def _mean(self, s: Series) -> float:
        per_8h = s.spec.mean_rate + VENUE_RATE_OFFSET.get(s.venue, 0.0)
        return per_8h * s.interval_h / 8.0

    # ---- what the venues show -------------------------------------------------------------

    def listed(self, venue: str) -> list[Series]:
        """Perpetuals a venue lists now (a scripted listing appears at its time)."""
        return [
            s
            for (v, _), s in sorted(self.series.items())
            if v == venue and s.listed_ms <= self.now_ms
        ]

    def get(self, venue: str, symbol: str) -> Series | None:
        s = self.series.get((venue, symbol))
        if s is None or s.listed_ms > self.now_ms:
            return None
        return s

    def mark(self, s: Series) -> float:
        return self.price[s.base] * (1.0 + VENUE_BASIS.get(s.venue, 0.0))

    def index(self, s: Series) -> float:
        return self.price[s.base]

    def oi_units(self, s: Series) -> float:
        """Open interest in base units: positions, which a price move alone does not change."""
        return s.spec.oi_usd / s.oi_ref_price * s.oi_scale / max(len(s.spec.venues), 1)

    def oi_usd(self, s: Series) -> float:
        return self.oi_units(s) * self.mark(s)

    def book(self, s: Series, depth: int = 10) -> tuple[list[tuple[float, float]], ...]:
        """(bids, asks) as (price, base qty), best first; thinner during a cascade."""
        return self._ladder(self.mark(s), s.spec.book_depth_usd, self._thinning(s), depth)

    def spot_book(self, base: str, depth: int = 10) -> tuple[list[tuple[float, float]], ...]:
        """The spot pair's book, around the index price (the spot price every venue's index
        tracks), as deep as the perpetual's."""
        return self._ladder(self.price[base], self.specs[base].book_depth_usd, (1.0, 1.0), depth)

    @staticmethod
    def _ladder(
        mid: float, depth_usd: float, thin: tuple[float, float], depth: int
    ) -> tuple[list[tuple[float, float]], ...]:
        tick = tick_size(mid)
        bid_thin, ask_thin = thin
        per_level = depth_usd / 10.0 / mid
        half = max(tick, mid * 0.00005)
        bids, asks = [], []
        for i in range(depth):
            size = per_level * (1.0 + 0.15 * i)
            off = half + i * tick * 2
            bids.append((round_price(mid - off, tick), round_qty(size * bid_thin, mid)))
            asks.append((round_price(mid + off, tick), round_qty(size * ask_thin, mid)))
        return bids, asks

    def outage(self, venue: str) -> ScriptedEvent | None:
        for start, end, e in self.active:
            if e.kind == "outage" and e.venue in ("", venue) and start <= self.now_ms < end:
                return e
        return None

    # ---- time -------------------------------------------------------------------------------

    def advance_to(self, t_ms: int) -> None:
        while self.now_ms + self.step_ms <= t_ms:
            self._step(self.now_ms + self.step_ms)
        if t_ms > self.now_ms:
            self._step(t_ms, partial=True)

    def _step(self, t_ms: int, partial: bool = False) -> None:
        dt_days = (t_ms - self.now_ms) / 86_400_000
        self.now_ms = t_ms
        self._fire_events()
        for _, end, e in self.active:
            if end <= t_ms and e.kind in ("funding_spike", "divergence"):
                self._release(e)
        self.active = [a for a in self.active if a[1] > t_ms or a[2].kind == "listing"]
        if partial:
            # sub-step moves are deterministic too: no randomness, only scripts and settlements
            self._force_rates()
            self._settle_due()
            return
        for base, spec in self.specs.items():
            closes = self.kline_closes.get(base)
            if closes:
                self.price[base] = interpolate(closes, t_ms)
            else:
                shock = self.rng.standard_normal()
                self.price[base] *= math.exp(spec.daily_vol * math.sqrt(dt_days) * shock)
            self.price[base] *= self._cascade_move(base, dt_days) * self._build_up_move(
                base, dt_days
            )
        hour_crossed = (t_ms // H_MS) > ((t_ms - int(dt_days * 86_400_000)) // H_MS)
        for s in self.series.values():
            self._move_rate(s, dt_days)
            self._move_oi(s, dt_days)
            if hour_crossed and s.listed_ms <= t_ms:
                s.oi_history.append(((t_ms // H_MS) * H_MS, self.oi_usd(s), self.mark(s)))
                del s.oi_history[:-2000]
        self._emit_liquidations()
        self._settle_due()

    def _fire_events(self) -> None:
        while self.event_pos < len(self.events):
            e = self.events[self.event_pos]
            at = self.start_ms + int(e.at_s * 1000)
            if at > self.now_ms:
                return
            self.event_pos += 1
            self.inject(e, at)

    def inject(self, e: ScriptedEvent, at_ms: int | None = None) -> None:
        """Start a scripted event now (or at ``at_ms``, which must not be in the future)."""
        at = self.now_ms if at_ms is None else at_ms
        self.active.append((at, at + int(e.duration_s * 1000), e))
        if e.kind == "listing":
            base = base_of(e.symbol)
            venues = (
                {e.venue: e.interval_hours} if e.venue else dict.fromkeys(VENUES, e.interval_hours)
            )
            if base in self.specs:
                spec = msgspec.structs.replace(self.specs[base], venues=venues)
            else:
                spec = SymbolSpec(
                    base=base,
                    price=e.price,
                    venues=venues,
                    daily_vol=0.12,
                    mean_rate=0.0005,
                    oi_usd=2e7,
                    book_depth_usd=2e5,
                )
            self._add_symbol(spec, listed_ms=at)
        if e.kind in ("funding_spike", "divergence"):
            self._force_rates()
        if e.kind == "cascade":
            n = max(e.liquidations, 0)
            for i in range(n):
                self._pending_liqs.append((at + int(e.duration_s * 1000 * i / max(n, 1)), e))

    def _events_now(self, kind: str, venue: str, base: str) -> list[ScriptedEvent]:
        out = []
        for start, end, e in self.active:
            if e.kind != kind or not (start <= self.now_ms < end):
                continue
            if e.venue not in ("", venue) or (e.symbol and base_of(e.symbol) != base):
                continue
            out.append(e)
        return out

    def _cascade_move(self, base: str, dt_days: float) -> float:
        factor = 1.0
        for start, end, e in self.active:
            if e.kind == "cascade" and base_of(e.symbol) == base and start <= self.now_ms < end:
                frac_of_event = dt_days * 86_400_000 / max(end - start, 1)
                factor *= math.exp(math.log(1.0 - e.drop_frac) * frac_of_event)
        return factor

    def _build_ups(self, venue: str | None, base: str) -> list[tuple[int, int, ScriptedEvent]]:
        """Active build-ups for a venue (None: any) and base; no symbol means every symbol."""
        return [
            (start, end, e)
            for start, end, e in self.active
            if e.kind == "build_up"
            and start <= self.now_ms < end
            and (venue is None or e.venue in ("", venue))
            and (not e.symbol or base_of(e.symbol) == base)
        ]

    def _build_up_move(self, base: str, dt_days: float) -> float:
        """Price drift of the active build-ups over this step (the price is one for all venues)."""
        factor = 1.0
        for start, end, e in self._build_ups(None, base):
            factor *= (1.0 + e.rise_frac) ** (dt_days * 86_400_000 / max(end - start, 1))
        return factor

    def _thinning(self, s: Series) -> tuple[float, float]:
        """(bid, ask) depth factors: liquidity leaves the book while forced orders sweep it.

        The side the forced orders hit (bids under liquidated longs, asks under liquidated
        shorts) is withdrawn most, the other side partly, so a cascade shows as an imbalance.
        """
        hit, other = 1.0, 1.0
        sign = 0.0
        for e in self._events_now("cascade", s.venue, s.base):
            hit, other = min(hit, CASCADE_HIT_SIDE_DEPTH), min(other, CASCADE_OTHER_SIDE_DEPTH)
            sign += 1.0 if e.drop_frac > 0 else -1.0
        return (hit, other) if sign >= 0 else (other, hit)

    def _forced_rate(self, s: Series) -> float | None:
        forced = self._events_now("funding_spike", s.venue, s.base) + self._events_now(
            "divergence", s.venue, s.base
        )
        return forced[-1].rate if forced else None

    def _release(self, e: ScriptedEvent) -> None:
        """A forced rate ends: the venue's rate goes back to its long-run level."""
        for s in self.series.values():
            if e.venue in ("", s.venue) and (not e.symbol or base_of(e.symbol) == s.base):
                s.rate = self._mean(s)

    def _force_rates(self) -> None:
        for s in self.series.values():
            rate = self._forced_rate(s)
            if rate is not None:
                s.rate = rate

    def _move_rate(self, s: Series, dt_days: float) -> None:
        forced = self._forced_rate(s)
        if forced is not None:
            s.rate = forced
            return
        if s.replay is not None:
            s.rate = self._replay_rate(s)
            return
        steps_per_interval = s.interval_h / 24.0 / max(dt_days, 1e-9)
        phi = 0.5 ** (1.0 / max(steps_per_interval * 6.0, 1.0))  # half-life of six intervals
        mean = self._mean(s)
        noise = abs(mean) * 0.6 + 0.00003 * s.interval_h / 8.0
        shock = float(self.rng.standard_normal())
        ramps = [(end, e) for _, end, e in self._build_ups(s.venue, s.base) if e.rate != 0]
        if ramps:
            # a straight line from the current rate to the target, reached as the event ends;
            # the shock is drawn anyway so that the rest of the market keeps its path
            end, e = ramps[-1]
            dt_ms = dt_days * 86_400_000
            s.rate += (e.rate - s.rate) * dt_ms / max(end - self.now_ms + dt_ms, 1.0)
        else:
            s.rate = mean + phi * (s.rate - mean) + noise * math.sqrt(1 - phi**2) * shock
        cap = self.scenario.max_rate
        s.rate = min(max(s.rate, -cap), cap)

    def _replay_rate(self, s: Series) -> float:
        assert s.replay is not None
        while s.replay_pos < len(s.replay) and s.replay[s.replay_pos][0] <= self.now_ms:
            s.replay_pos += 1
        if s.replay_pos < len(s.replay):
            return s.replay[s.replay_pos][1]
        return s.replay[-1][1] if s.replay else 0.0

    def _move_oi(self, s: Series, dt_days: float) -> None:
        drops = self._events_now("cascade", s.venue, s.base)
        for e in drops:
            start, end = next((a, b) for a, b, x in self.active if x is e)
            s.oi_scale *= (1.0 - e.oi_drop_frac) ** (dt_days * 86_400_000 / max(end - start, 1))
        for start, end, e in self._build_ups(s.venue, s.base):
            s.oi_scale *= (1.0 + e.oi_rise_frac) ** (dt_days * 86_400_000 / max(end - start, 1))
        s.oi_scale *= math.exp(0.02 * math.sqrt(dt_days) * float(self.rng.standard_normal()))

    def _emit_liquidations(self) -> None:
        keep = []
        for t, e in self._pending_liqs:
            if t > self.now_ms:
                keep.append((t, e))
                continue
            base = base_of(e.symbol)
            for venue in VENUES if not e.venue else (e.venue,):
                s = self.get(venue, f"{base}USDT")
                if s is None:
                    continue
                notional = float(self.rng.lognormal(math.log(20_000), 1.0))
                price = self.mark(s)
                self.liquidations[venue].append(
                    LiquidationPrint(
                        ts_ms=t,
                        venue=venue,
                        symbol=s.symbol,
                        side="sell" if e.drop_frac > 0 else "buy",
                        price=round_price(price, tick_size(price)),
                        qty=round_qty(notional / price, price),
                    )
                )
                while len(self.liquidations[venue]) > 10_000:
                    self.liquidations[venue].popleft()
        self._pending_liqs = keep

    def _settle_due(self) -> None:
        for s in self.series.values():
            while s.next_funding_ms <= self.now_ms:
                t = s.next_funding_ms
                if s.listed_ms <= t:
                    rate = s.rate
                    if s.replay is not None:
                        rate = next((r for tt, r in s.replay if tt == t), s.rate)
                    mark = self.mark(s)
                    s.settled.append((t, rate, mark))
                    for listener in self.settle_listeners:
                        listener(s, t, rate, mark)
                s.next_funding_ms = t + int(s.interval_h * H_MS)


def base_of(symbol: str) -> str:
    for suffix in ("-USDT-SWAP", "USDT", "/USDT:USDT"):
        if symbol.endswith(suffix):
            return symbol[: -len(suffix)]
    return symbol


def tick_size(price: float) -> float:
    """A tick near 1 bp of price, a power of ten as venues use."""
    return 10 ** math.floor(math.log10(price * 0.0001)) if price > 0 else 0.01


def round_price(p: float, tick: float) -> float:
    digits = max(0, -math.floor(math.log10(tick)))
    return round(round(p / tick) * tick, digits)


def lot_size(price: float) -> float:
    """A lot worth about 1 USDT or less."""
    return 10 ** math.floor(math.log10(1.0 / price)) if price > 0 else 1.0


def round_qty(q: float, price: float) -> float:
    lot = lot_size(price)
    digits = max(0, -math.floor(math.log10(lot)))
    return round(max(lot, math.floor(q / lot) * lot), digits)


def interpolate(points: list[tuple[int, float]], t_ms: int) -> float:
    """Log-linear interpolation between recorded closes."""
    if t_ms <= points[0][0]:
        return points[0][1]
    if t_ms >= points[-1][0]:
        return points[-1][1]
    lo, hi = 0, len(points) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if points[mid][0] <= t_ms:
            lo = mid
        else:
            hi = mid
    (t0, p0), (t1, p1) = points[lo], points[hi]
    w = (t_ms - t0) / (t1 - t0)
    return math.exp(math.log(p0) * (1 - w) + math.log(p1) * w)
