"""Estimates liquidation-cascade probability per (venue, symbol) from market-data events.

Prices, open interest, funding, book tops and liquidation prints are folded into bars of the
model's own length (a day for the daily artifact trained on real data, minutes for the
intraday one trained on simulator markets), and the features are computed from those bars by
the model's own feature functions, the ones training used; the newest, still-forming bar
counts as the latest bar. Open interest is turned into position units (USD / mark) so a price
move alone is not read as positions closing; open interest, funding and the book are states,
carried into a bar that has no update of its own. For the intraday model the book imbalance,
the 15-minute momentum and the recent liquidation volume are model inputs; the daily model
has no history of them, and for it they are tracked live and exported as metrics. Momentum
breaks a tie when the model's down/up split is unclear. Marked symbols are forecast on the
next tick in one pass and published as ``CascadeForecast``. Without a model the service is not
ready and publishes nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from hean.ml.cascade.features import book_imbalance, liquidation_volume, momentum
from hean.ml.cascade.intraday import INTRADAY_BAR_COLUMNS
from hean.ml.cascade.model import CascadeModel
from hean.runtime.logic import Input, Output, ServiceLogic
from hean_proto.events import (
    BookTop,
    CascadeForecast,
    Event,
    FundingRate,
    Liquidation,
    OpenInterest,
    PriceTick,
)
from hean_proto.subjects import BOOK, FUNDING, LIQUIDATION, OPEN_INTEREST, PRICE

QUEUE = "liquidation-predictor"


class PredictorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.registry = reg
        self.detections = Counter(
            "hean_liquidation_cascade_detections_total",
            "Forecasts with cascade probability at or above the detection threshold.",
            ["venue", "direction"],
            registry=reg,
        )
        self.forecasts = Counter(
            "hean_liquidation_forecasts_total",
            "Cascade forecasts published.",
            ["venue"],
            registry=reg,
        )
        self.ignored = Counter(
            "hean_liquidation_predictor_ignored_total",
            "Inputs not used: stale, out of order, or unusable values.",
            ["reason"],
            registry=reg,
        )
        self.probability = Gauge(
            "hean_liquidation_cascade_probability",
            "Latest cascade probability (0..1).",
            ["venue", "symbol"],
            registry=reg,
        )
        self.book_imbalance = Gauge(
            "hean_liquidation_book_imbalance",
            "Top-of-book notional imbalance, (bids - asks) / total, -1..1.",
            ["venue", "symbol"],
            registry=reg,
        )
        self.liq_volume = Gauge(
            "hean_liquidation_volume_usd",
            "Liquidated notional over the recent window, USD, by liquidated side.",
            ["venue", "symbol", "side"],
            registry=reg,
        )
        self.model_loaded = Gauge(
            "hean_liquidation_model_loaded", "1 when a cascade model is loaded.", registry=reg
        )


@dataclass(frozen=True)
class PredictorConfig:
    detection_threshold: float = 0.7
    momentum_window_ms: int = 15 * 60_000
    liq_window_ms: int = 60 * 60_000
    book_depth: int = 10
    max_bars: int = 64
    """Bars kept per symbol, at least; more when the model's cluster estimate looks further."""
    liquidation_stream: bool = True
    """The venues stream liquidations, so a bar without prints had none. False makes the
    intraday model's liquidation volume unknown (NaN, as in training runs without a stream)."""
    direction_margin: float = 0.1
    """The model's direction is clear when |P(down) - P(up)| >= margin * probability."""
    min_momentum_frac: float = 0.002


@dataclass
class _Symbol:
    bars: dict[int, list[float]] = field(default_factory=dict)
    """bar index -> [open, high, low, close, oi_units, funding_sum, funding_n, book_imbalance,
    liquidated long USD, liquidated short USD]"""
    mark: float | None = None
    ticks: deque = field(default_factory=deque)
    liqs: deque = field(default_factory=deque)
    imbalance: float | None = None
    last_ts: dict[str, int] = field(default_factory=dict)


class LiquidationPredictorLogic(ServiceLogic):
    name = "liquidation-predictor"
    tick_interval_s = 1.0

    def __init__(
        self,
        model: CascadeModel | None = None,
        config: PredictorConfig | None = None,
        metrics: PredictorMetrics | None = None,
    ) -> None:
        self.config = config or PredictorConfig()
        self.metrics = metrics or PredictorMetrics()
        self.model: CascadeModel | None = None
        self.load_error = "no model loaded yet"
        self.symbols: dict[tuple[str, str], _Symbol] = {}
        self.dirty: dict[tuple[str, str], int] = {}
        self.last: dict[tuple[str, str], CascadeForecast] = {}
        if model is not None:
            self.set_model(model)

    def set_model(self, model: CascadeModel | None, error: str = "") -> None:
        self.model = model
        self.load_error = error if model is None else ""
        self.metrics.model_loaded.set(1 if model else 0)

    def inputs(self) -> list[Input]:
        return [
            Input(OPEN_INTEREST.pattern(), (OpenInterest,), queue=QUEUE),
            Input(FUNDING.pattern(), (FundingRate,), queue=QUEUE),
            Input(PRICE.pattern(), (PriceTick,), queue=QUEUE),
            Input(BOOK.pattern(), (BookTop,), queue=QUEUE),
            Input(LIQUIDATION.pattern(), (Liquidation,), queue=QUEUE),
        ]

    # ------------------------------------------------------------------ state

    def bars_kept(self) -> int:
        """Bars kept per symbol: enough for the model's cluster look-back and warm-up."""
        if self.model is None:
            return self.config.max_bars
        need = max(self.model.cluster.lookback_bars + 2, self.model.min_bars)
        return max(self.config.max_bars, need)

    def _bar(self, s: _Symbol, ts_ms: int) -> list[float] | None:
        bar_ms = self.model.bar_ms if self.model else 86_400_000
        idx = ts_ms // bar_ms
        if s.bars and idx < max(s.bars) - 1:
            self.metrics.ignored.labels("too_old").inc()
            return None
        if idx not in s.bars:
            prev = s.bars[max(s.bars)] if s.bars else None
            oi = prev[4] if prev else math.nan
            book = prev[7] if prev else math.nan
            liq = 0.0 if self.config.liquidation_stream else math.nan
            s.bars[idx] = [math.nan, math.nan, math.nan, math.nan, oi, 0.0, 0, book, liq, liq]
            for old in sorted(s.bars)[: -self.bars_kept()]:
                del s.bars[old]
        return s.bars[idx]

    def _price(self, s: _Symbol, ts_ms: int, px: float) -> None:
        b = self._bar(s, ts_ms)
        s.mark = px
        s.ticks.append((ts_ms, px))
        keep = self.config.momentum_window_ms * 2
        while s.ticks and s.ticks[0][0] < ts_ms - keep:
            s.ticks.popleft()
        if b is None:
            return
        if math.isnan(b[0]):
            b[0] = b[1] = b[2] = px
        b[1], b[2], b[3] = max(b[1], px), min(b[2], px), px

    def on_event(self, event: Event, now_ms: int) -> list[Output]:
        venue, symbol = getattr(event, "venue", None), getattr(event, "symbol", None)
        if venue is None or symbol is None:
            return []
        if getattr(event, "stale", False):
            self.metrics.ignored.labels("stale").inc()
            return []
        key = (venue, symbol)
        s = self.symbols.setdefault(key, _Symbol())
        kind = type(event).__name__
        if kind in ("PriceTick", "OpenInterest") and event.ts_ms < s.last_ts.get(kind, 0):
            self.metrics.ignored.labels("out_of_order").inc()
            return []
        s.last_ts[kind] = event.ts_ms
        if isinstance(event, PriceTick):
            self._price(s, event.ts_ms, float(event.mark))
        elif isinstance(event, OpenInterest):
            if s.mark is None:
                self.metrics.ignored.labels("oi_before_price").inc()
                return []
            b = self._bar(s, event.ts_ms)
            if b is not None:
                b[4] = float(event.oi_usd) / s.mark
        elif isinstance(event, FundingRate):
            b = self._bar(s, event.ts_ms)
            if b is not None:
                b[5] += float(event.rate) * 1e4 * 8.0 / float(event.interval_hours)
                b[6] += 1
        elif isinstance(event, BookTop):
            depth = self.model.book_depth if self.model else self.config.book_depth
            s.imbalance = book_imbalance(
                [(lv.price, lv.size) for lv in event.bids],
                [(lv.price, lv.size) for lv in event.asks],
                depth,
            )
            self.metrics.book_imbalance.labels(venue, symbol).set(s.imbalance)
            b = self._bar(s, event.ts_ms)
            if b is not None:
                b[7] = s.imbalance
        elif isinstance(event, Liquidation):
            b = self._bar(s, event.ts_ms)
            if b is not None:
                # a print always says there is a stream, whatever the setting
                col = 8 if event.side == "sell" else 9
                b[col] = (0.0 if math.isnan(b[col]) else b[col]) + float(event.notional_usd)
            s.liqs.append((event.ts_ms, event.side, float(event.notional_usd)))
            while s.liqs and s.liqs[0][0] <= event.ts_ms - self.config.liq_window_ms:
                s.liqs.popleft()
            longs, shorts = liquidation_volume(s.liqs, event.ts_ms, self.config.liq_window_ms)
            self.metrics.liq_volume.labels(venue, symbol, "long").set(longs)
            self.metrics.liq_volume.labels(venue, symbol, "short").set(shorts)
        self.dirty[key] = event.ts_ms
        return []

    def bars_frame(self, key: tuple[str, str]) -> pd.DataFrame:
        """The symbol's bars in the models' input layout (states carried forward)."""
        s = self.symbols[key]
        bar_ms = self.model.bar_ms if self.model else 86_400_000
        rows = []
        oi = funding = math.nan
        for idx in sorted(s.bars):
            o, h, lo, c, u, fsum, fn, book, liq_long, liq_short = s.bars[idx]
            oi = u if not math.isnan(u) else oi
            funding = fsum / fn if fn else funding
            if math.isnan(c):
                continue
            rows.append((idx * bar_ms, o, h, lo, c, oi, funding, book, liq_long, liq_short))
        # typed even when empty (only funding or open interest seen so far, no price yet)
        cols = INTRADAY_BAR_COLUMNS
        types = {c: ("int64" if c == "time_ms" else "float64") for c in cols}
        return pd.DataFrame(rows, columns=list(cols)).astype(types)

    # ------------------------------------------------------------------ forecasting

    def on_tick(self, now_ms: int) -> list[Output]:
        if self.model is None or not self.dirty:
            return []
        out: list[Output] = []
        for key, ts in list(self.dirty.items()):
            del self.dirty[key]
            f = self.forecast(key, ts)
            if f is not None:
                out.append(f)
        return out

    def forecast(self, key: tuple[str, str], ts_ms: int) -> CascadeForecast | None:
        if self.model is None:
            return None
        bars = self.bars_frame(key)
        bars = bars[np.isfinite(bars["oi_units"])]
        if len(bars) < self.model.min_bars:
            self.metrics.ignored.labels("warming_up").inc()
            return None
        pred = self.model.predict_latest(bars)
        if pred is None:
            return None
        s = self.symbols[key]
        times = [t for t, _ in s.ticks]
        prices = [p for _, p in s.ticks]
        mom = momentum(times, prices, ts_ms, self.config.momentum_window_ms) if prices else math.nan
        direction = pred.direction
        if abs(pred.p_down - pred.p_up) < self.config.direction_margin * pred.probability:
            if math.isfinite(mom) and abs(mom) >= self.config.min_momentum_frac:
                direction = "down" if mom < 0 else "up"
            else:
                direction = "none"
        venue, symbol = key
        fc = CascadeForecast(
            ts_ms=ts_ms,
            venue=venue,
            symbol=symbol,
            probability=min(1.0, max(0.0, pred.probability)),
            direction=direction,
            model_version=self.model.version,
            momentum_15m_frac=mom if math.isfinite(mom) else 0.0,
        )
        self.last[key] = fc
        self.metrics.forecasts.labels(venue).inc()
        self.metrics.probability.labels(venue, symbol).set(fc.probability)
        if fc.probability >= self.config.detection_threshold:
            self.metrics.detections.labels(venue, direction).inc()
        return fc

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"model_loaded": self.model is not None}

    def snapshot(self) -> dict[str, object]:
        return {
            "model_version": self.model.version if self.model else None,
            "model_error": self.load_error,
            "not_ready_reason": "" if self.model else f"no cascade model: {self.load_error}",
            "symbols": len(self.symbols),
            "latest": {
                f"{v}:{s}": {"p": round(f.probability, 4), "direction": f.direction}
                for (v, s), f in list(self.last.items())[:50]
            },
        }
