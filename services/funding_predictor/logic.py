"""Forecasts the next funding rate per (venue, symbol) from its settled history.

Each settlement (``FundingRate`` with ``settled=True``) is appended to a bounded per-series
history and marks the series for forecasting; forecasts are made on the next tick, all marked
series in one batched model call, and published as ``FundingForecast``. When the realised
settlement for a published forecast arrives, its error feeds the online accuracy metrics and
the recent residuals of its (venue, interval); once a bucket holds ``min_online_residuals``,
intervals and confidence come from those recent realised errors (online split conformal)
instead of the artifact's calibration period, so they follow regime changes.
Without a loaded model the service is not ready and publishes nothing. Venue estimates
(``settled=False``) are not history and do not trigger forecasts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hean.ml.funding.calibration import QUANTILE_GRID, Calibration, bucket_keys
from hean.ml.funding.model import Forecast, FundingForecaster, SeriesHistory
from hean.runtime.logic import Input, Output, ServiceLogic
from hean_proto.events import Event, FundingForecast, FundingRate
from hean_proto.subjects import FUNDING


class PredictorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.registry = reg
        self.mae = Gauge(
            "hean_funding_prediction_mae",
            "Mean absolute error of realised forecasts over the recent window, bps per interval.",
            registry=reg,
        )
        self.accuracy = Gauge(
            "hean_funding_prediction_accuracy",
            "Share of recent realised forecasts with the right sign (0..1).",
            registry=reg,
        )
        self.abs_error = Histogram(
            "hean_funding_forecast_abs_error_bps",
            "Absolute error of each forecast once its settlement arrived, bps per interval.",
            ["venue"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 100),
            registry=reg,
        )
        self.forecasts = Counter(
            "hean_funding_forecasts_total", "Forecasts published.", ["venue"], registry=reg
        )
        self.ignored = Counter(
            "hean_funding_predictor_ignored_total",
            "Settlements not used: duplicate or older than the history, or an estimate.",
            ["reason"],
            registry=reg,
        )
        self.model_loaded = Gauge(
            "hean_funding_model_loaded", "1 when a model artifact is loaded.", registry=reg
        )


@dataclass
class _Series:
    times: deque = field(default_factory=deque)
    rates: deque = field(default_factory=deque)
    intervals: deque = field(default_factory=deque)
    pending: Forecast | None = None


@dataclass(frozen=True)
class PredictorConfig:
    history_len: int = 64
    """Settlements kept per series (the model needs seq_len + its rolling window)."""
    accuracy_window: int = 500
    max_batch: int = 2048
    residual_window: int = 500
    """Recent realised residuals kept per (venue, interval) for online calibration."""
    min_online_residuals: int = 50


class FundingPredictorLogic(ServiceLogic):
    name = "funding-predictor"
    tick_interval_s = 1.0

    def __init__(
        self,
        forecaster: FundingForecaster | None = None,
        config: PredictorConfig | None = None,
        metrics: PredictorMetrics | None = None,
    ) -> None:
        self.config = config or PredictorConfig()
        self.metrics = metrics or PredictorMetrics()
        self.forecaster: FundingForecaster | None = None
        self.series: dict[tuple[str, str], _Series] = {}
        self.dirty: dict[tuple[str, str], None] = {}
        self.errors: deque[tuple[float, bool]] = deque(maxlen=self.config.accuracy_window)
        self.residuals: dict[tuple[str, float], deque[float]] = {}
        self.load_error = ""
        if forecaster is not None:
            self.set_forecaster(forecaster)

    def set_forecaster(self, forecaster: FundingForecaster | None, error: str = "") -> None:
        """Swap the model (hot reload); pending forecasts of the old model still get scored."""
        self.forecaster = forecaster
        self.load_error = error
        self.metrics.model_loaded.set(1 if forecaster else 0)

    def inputs(self) -> list[Input]:
        return [Input(FUNDING.pattern(), (FundingRate,), queue="funding-predictor")]

    # ------------------------------------------------------------------ history

    def add_settlement(self, venue: str, symbol: str, time_ms: int, rate: float, ih: float) -> bool:
        s = self.series.setdefault((venue, symbol), _Series())
        if s.times and time_ms <= s.times[-1]:
            self.metrics.ignored.labels("duplicate_or_old").inc()
            return False
        if not math.isfinite(rate):
            self.metrics.ignored.labels("not_finite").inc()
            return False
        self._score_pending(venue, s, time_ms, rate)
        s.times.append(time_ms)
        s.rates.append(rate)
        s.intervals.append(ih)
        while len(s.times) > self.config.history_len:
            s.times.popleft()
            s.rates.popleft()
            s.intervals.popleft()
        return True

    def _score_pending(self, venue: str, s: _Series, time_ms: int, rate: float) -> None:
        f = s.pending
        if f is None:
            return
        s.pending = None
        tolerance = f.interval_hours * 3_600_000 / 2
        if abs(time_ms - f.for_funding_ms) > tolerance:
            return
        err_bps = abs(rate - f.predicted_rate) * 1e4
        bucket = self.residuals.setdefault(
            (venue, f.interval_hours), deque(maxlen=self.config.residual_window)
        )
        bucket.append((rate - f.predicted_rate) * 1e4)
        right_sign = (rate > 0) == (f.predicted_rate > 0) if rate != 0 else True
        self.errors.append((err_bps, right_sign))
        self.metrics.abs_error.labels(venue).observe(err_bps)
        self.metrics.mae.set(sum(e for e, _ in self.errors) / len(self.errors))
        self.metrics.accuracy.set(sum(1 for _, ok in self.errors if ok) / len(self.errors))

    def on_event(self, event: Event, now_ms: int) -> list[Output]:
        if not isinstance(event, FundingRate):
            return []
        if not event.settled:
            self.metrics.ignored.labels("estimate").inc()
            return []
        t = event.funding_time_ms if event.funding_time_ms is not None else event.ts_ms
        if self.add_settlement(event.venue, event.symbol, t, event.rate, event.interval_hours):
            self.dirty[(event.venue, event.symbol)] = None
        if len(self.dirty) >= self.config.max_batch:
            return self.forecast_dirty(now_ms)
        return []

    def on_tick(self, now_ms: int) -> list[Output]:
        return self.forecast_dirty(now_ms)

    # ------------------------------------------------------------------ forecasting

    def _history(self, key: tuple[str, str]) -> SeriesHistory:
        s = self.series[key]
        return SeriesHistory(key[0], key[1], list(s.times), list(s.rates), list(s.intervals))

    def forecast_dirty(self, now_ms: int) -> list[Output]:
        if self.forecaster is None or not self.dirty:
            return []
        wanted = list(self.dirty)
        self.dirty.clear()
        symbols = {sym for _, sym in wanted}
        # peers on other venues supply the cross-venue spread feature
        keys = [k for k in self.series if k[1] in symbols]
        results = self.forecaster.predict_batch([self._history(k) for k in keys])
        by_key = dict(zip(keys, results, strict=True))
        out: list[Output] = []
        for key in wanted:
            f = by_key.get(key)
            if f is None:
                continue
            f = self._recalibrate(f)
            self.series[key].pending = f
            self.metrics.forecasts.labels(key[0]).inc()
            out.append(
                FundingForecast(
                    ts_ms=now_ms,
                    venue=key[0],
                    symbol=key[1],
                    interval_hours=f.interval_hours,
                    current_rate=f.current_rate,
                    predicted_rate=f.predicted_rate,
                    lower_rate=f.lower_rate,
                    upper_rate=f.upper_rate,
                    confidence=f.confidence,
                    action=f.action,
                    model_version=f.model_version,
                    for_funding_ms=f.for_funding_ms,
                )
            )
        return out

    def _recalibrate(self, f: Forecast) -> Forecast:
        recent = self.residuals.get((f.venue, f.interval_hours))
        if self.forecaster is None or not recent or len(recent) < self.config.min_online_residuals:
            return f
        online = Calibration(
            coverage=self.forecaster.calibration.coverage,
            buckets={
                bucket_keys(f.venue, f.interval_hours)[0]: np.quantile(
                    np.asarray(recent), QUANTILE_GRID
                ).tolist()
            },
        )
        pred_bps = f.predicted_rate * 1e4
        lo, hi, conf = online.interval(pred_bps, f.venue, f.interval_hours)
        per8 = 8.0 / f.interval_hours
        action = self.forecaster.policy.decide(f.current_rate * 1e4 * per8, pred_bps * per8, conf)
        return replace(
            f,
            lower_rate=max(-1.0, min(1.0, lo / 1e4)),
            upper_rate=max(-1.0, min(1.0, hi / 1e4)),
            confidence=conf,
            action=action,
        )

    def readiness(self, now_ms: int) -> dict[str, bool]:
        return {"model_loaded": self.forecaster is not None}

    def snapshot(self) -> dict[str, object]:
        return {
            "model_version": self.forecaster.version if self.forecaster else None,
            "model_error": self.load_error,
            "series": len(self.series),
            "realised_forecasts": len(self.errors),
        }
