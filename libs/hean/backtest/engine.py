"""Replays history through the live strategy-engine logic and a paper portfolio.

The strategy is built from the same registry and hosted by the same ``StrategyEngineLogic``
as the live service, so its signals pass the same checks; forecasts come from the live
``FundingPredictorLogic`` with the shipped model, spreads from the collector's own spread
function. Time is the replayed data's: at each timestamp, prices first, then settlements
(funding is charged on positions held through them), then the derived spreads and forecasts,
then the signals they cause are filled and their risk decisions fed back. Nothing later than
the current timestamp is visible to anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from hean.backtest.baselines import NaiveCarry, NaiveSpread
from hean.backtest.data import BacktestDataError, History
from hean.backtest.portfolio import CostModel, Limits, Portfolio, Trade
from hean.marketdata.spreads import Quote, SpreadParams, all_spreads
from hean.strategies import build as build_strategy
from hean.strategies import canonical_name
from hean.strategies.base import Strategy
from hean_proto.events import (
    CascadeForecast,
    FundingForecast,
    FundingRate,
    FundingSpread,
    PriceTick,
    RiskDecision,
    Signal,
)
from hean_services.strategy_engine.logic import StrategyEngineLogic

log = logging.getLogger("hean.backtest")

Progress = Callable[[int, int], None]


@dataclass
class BacktestConfig:
    strategy: str
    capital: float = 10_000.0
    costs: CostModel = field(default_factory=CostModel)
    limits: Limits = field(default_factory=Limits)
    strategy_config: dict[str, Any] | None = None
    spread_horizon_hours: float = 72.0
    baseline: bool = True


@dataclass
class Replay:
    portfolio: Portfolio
    equity_ms: list[int]
    equity_usd: list[float]
    signals: list[Signal]
    events: int
    model_version: str | None = None


@dataclass
class BacktestResult:
    config: BacktestConfig
    history: History
    replay: Replay
    baseline: Replay | None

    @property
    def trades(self) -> list[Trade]:
        return self.replay.portfolio.closed + self.replay.portfolio.open


class _Forecasts:
    """The live funding predictor, warmed up on settlements before the range."""

    def __init__(self, warmup: list[FundingRate]) -> None:
        from hean.ml.funding.model import DEFAULT_DIR, FundingForecaster
        from hean_services.funding_predictor.logic import FundingPredictorLogic

        self.logic = FundingPredictorLogic(FundingForecaster.load(DEFAULT_DIR))
        for e in warmup:
            self.logic.add_settlement(e.venue, e.symbol, e.ts_ms, e.rate, e.interval_hours)
        self.version = self.logic.forecaster.version if self.logic.forecaster else None

    def step(self, settled: list[FundingRate], now_ms: int) -> list[FundingForecast]:
        for e in settled:
            self.logic.on_event(e, now_ms)
        return [f for f in self.logic.on_tick(now_ms) if isinstance(f, FundingForecast)]


def _timeline(history: History) -> list[tuple[int, int, object]]:
    """(time, order, item): price bars (order 0) before settlements (order 1) at equal times."""
    items: list[tuple[int, int, object]] = []
    venues_of: dict[str, set[str]] = {}
    for e in history.funding:
        venues_of.setdefault(e.symbol, set()).add(e.venue)
        items.append((e.ts_ms, 1, e))
    for symbol, series in history.prices.items():
        first = series.at(history.start_ms)
        if first is not None:
            items.append((history.start_ms, 0, (symbol, *first, venues_of.get(symbol, set()))))
        for t, perp, spot in zip(series.times_ms, series.perp, series.spot, strict=True):
            if history.start_ms < t < history.end_ms:
                items.append((int(t), 0, (symbol, float(perp), float(spot), venues_of[symbol])))
    items.sort(key=lambda x: (x[0], x[1]))
    return items


def replay(
    history: History,
    strategy: Strategy,
    cfg: BacktestConfig,
    progress: Progress | None = None,
) -> Replay:
    needs = set(strategy.inputs)
    if CascadeForecast in needs:
        raise BacktestDataError(
            f"{strategy.name} needs CascadeForecast events; this history has no event-level "
            "liquidations to produce them from (see the data README, 'What is missing')"
        )
    engine = StrategyEngineLogic([strategy])
    portfolio = Portfolio(cfg.capital, cfg.costs, cfg.limits)
    forecasts = _Forecasts(history.warmup) if FundingForecast in needs else None
    quotes: dict[tuple[str, str], Quote] = {}
    for e in history.warmup:
        quotes[(e.venue, e.symbol)] = _quote(e, cfg.costs)
    params = SpreadParams(cfg.spread_horizon_hours, cfg.costs.slip_bps("default"))
    out = Replay(portfolio, [], [], [], 0, forecasts.version if forecasts else None)

    def feed(event: object, now_ms: int) -> None:
        out.events += 1
        for sig in engine.on_event(event, now_ms):
            if not isinstance(sig, Signal):
                continue
            out.signals.append(sig)
            why = portfolio.execute(sig, now_ms)
            decision = RiskDecision(
                ts_ms=now_ms,
                signal_id=sig.id,
                strategy=sig.strategy,
                symbol=sig.symbol,
                approved=why is None,
                reasons=[why] if why else [],
            )
            engine.on_event(decision, now_ms)

    items = _timeline(history)
    total = len(items)
    done = 0
    for t, group in groupby(items, key=lambda x: x[0]):
        batch = list(group)
        settled: list[FundingRate] = []
        for _, order, item in batch:
            if order == 0:
                symbol, perp, spot, venues = item  # type: ignore[misc]
                portfolio.set_price(symbol, perp, spot)
                if PriceTick in needs:
                    for venue in sorted(venues):
                        tick = PriceTick(ts_ms=t, venue=venue, symbol=symbol, mark=perp, index=spot)
                        feed(tick, t)
            else:
                e: FundingRate = item  # type: ignore[assignment]
                portfolio.settle_funding(e.venue, e.symbol, e.rate)
                settled.append(e)
        for e in settled:
            quotes[(e.venue, e.symbol)] = _quote(e, cfg.costs)
            if FundingRate in needs:
                feed(e, t)
        if settled and FundingSpread in needs:
            symbols = {e.symbol for e in settled}
            live = [q for q in quotes.values() if q.symbol in symbols]
            for s in all_spreads(live, params, t):
                feed(s, t)
        if settled and forecasts is not None:
            for f in forecasts.step(settled, t):
                feed(f, t)
        out.equity_ms.append(t)
        out.equity_usd.append(portfolio.equity())
        done += len(batch)
        if progress is not None:
            progress(done, total)
    end = out.equity_ms[-1] if out.equity_ms else history.end_ms
    portfolio.close_all(end, "end of backtest")
    out.equity_ms.append(end)
    out.equity_usd.append(portfolio.equity())
    return out


def _quote(e: FundingRate, costs: CostModel) -> Quote:
    return Quote(
        venue=e.venue,
        symbol=e.symbol,
        rate=e.rate,
        interval_hours=e.interval_hours,
        taker_fee=costs.fee_bps(e.venue, "perp") / 1e4,
        ts_ms=e.ts_ms,
    )


def run_backtest(
    history: History, cfg: BacktestConfig, progress: Progress | None = None
) -> BacktestResult:
    """The strategy and, when asked, its naive baseline over the same history and costs."""
    name = canonical_name(cfg.strategy)
    strategy = build_strategy(name, cfg.strategy_config)
    size = getattr(getattr(strategy, "config", None), "size_frac", cfg.limits.max_size_frac)
    main = replay(history, strategy, cfg, progress)
    base = None
    if cfg.baseline:
        naive: Strategy | None = None
        if FundingSpread in strategy.inputs:
            naive = NaiveSpread(size)
        elif FundingForecast in strategy.inputs or FundingRate in strategy.inputs:
            naive = NaiveCarry(size)
        if naive is not None:
            base = replay(history, naive, cfg)
    return BacktestResult(cfg, history, main, base)
