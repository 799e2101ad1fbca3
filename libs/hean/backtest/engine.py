"""Replays history through the live trading services on the in-memory bus.

Nothing is re-implemented for the backtest: the strategy is built from the live registry and
hosted by ``StrategyEngineLogic``; forecasts come from ``FundingPredictorLogic``; every signal
is decided by the risk-killswitch's ``RiskEngine`` (the same limits, latch, stop-losses and
loss-streak halts as live); approved intents are executed by the order-router's ``Executor``
against its ``PaperVenue``s (fees, book walking, slippage, multi-leg unwinds) and booked in its
``Ledger`` (positions, realised PnL, fees, funding). See ``hean.backtest.stack``.

Time is the replayed data's (a ``SimClock``). At each timestamp: risk publishes its state;
prices are published as a synthetic order book and a price tick per venue (``costs.BookModel``);
settlements are published as settled ``FundingRate``s (the router charges funding on open
positions at that venue's real settlement times); then the derived spreads and forecasts.
Whatever the services do in reaction happens before the clock moves on. Nothing later than the
current timestamp is visible to anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import pandas as pd

from hean.backtest.baselines import NaiveCarry, NaiveSpread
from hean.backtest.costs import CostModel
from hean.backtest.data import BacktestDataError, History
from hean.backtest.stack import LiveStack, Record
from hean.marketdata.spreads import Quote, SpreadParams, all_spreads
from hean.risk.limits import RiskLimits
from hean.runtime.logic import ServiceLogic
from hean.strategies import build as build_strategy
from hean.strategies import canonical_name
from hean.strategies.base import Strategy
from hean_proto.events import (
    CascadeForecast,
    Event,
    FundingForecast,
    FundingRate,
    FundingSpread,
    OpenInterest,
    PriceTick,
)

log = logging.getLogger("hean.backtest")

Progress = Callable[[int, int], None]


@dataclass
class BacktestConfig:
    strategy: str
    capital: float = 10_000.0
    costs: CostModel = field(default_factory=CostModel)
    risk: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``RiskLimits`` fields; the live defaults otherwise."""
    strategy_config: dict[str, Any] | None = None
    spread_horizon_hours: float = 72.0
    baseline: bool = True
    walk_forward: Any = None
    """A ``walkforward.WalkForward`` (funding model) or ``CascadeWalkForward`` (cascade model)
    to retrain the strategy's model per window, or None."""
    cascade_model_dir: str | None = None
    """Cascade model for the liquidation predictor; None = the shipped daily model."""

    def limits(self, strategy: Strategy | None = None) -> RiskLimits:
        """Live defaults, the capital, a strategy's raised size cap, then explicit overrides."""
        fields: dict[str, Any] = {"capital_usd": self.capital}
        cap = getattr(getattr(strategy, "config", None), "max_size_frac", None)
        if cap is not None and cap > RiskLimits.max_trade_frac:
            fields["max_trade_frac"] = cap
        fields.update(self.risk)
        try:
            return RiskLimits(**fields)
        except TypeError as exc:
            raise ValueError(f"unknown risk limit: {exc}") from None


@dataclass
class Replay:
    stack: LiveStack
    equity_ms: list[int]
    equity_usd: list[float]
    events: int
    model_version: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    """Walk-forward: which model served which window."""
    ref_prices: dict[tuple[str, str, int], float] = field(default_factory=dict)
    """(venue, symbol, time) -> the recorded price the synthetic book was built around."""

    @property
    def record(self) -> Record:
        return self.stack.record

    @property
    def signals(self):
        return self.stack.record.signals


@dataclass
class BacktestResult:
    config: BacktestConfig
    history: History
    replay: Replay
    baseline: Replay | None


def _timeline(history: History) -> list[tuple[int, int, object]]:
    """(time, order, item): at equal times price bars (0), then settlements (1), then other
    market events such as open interest (2)."""
    items: list[tuple[int, int, object]] = []
    for e in history.funding:
        items.append((e.ts_ms, 1, e))
    for e in history.market:
        items.append((e.ts_ms, 2, e))
    for symbol, series in history.prices.items():
        first = series.at(history.start_ms)
        if first is not None:
            items.append((history.start_ms, 0, (symbol, *first)))
        for t, perp, spot in zip(series.times_ms, series.perp, series.spot, strict=True):
            if history.start_ms < t < history.end_ms:
                items.append((int(t), 0, (symbol, float(perp), float(spot))))
    items.sort(key=lambda x: (x[0], x[1]))
    return items


class _Predictor:
    """The live funding predictor with the shipped model, warmed up before the range."""

    def __init__(self, warmup: list[FundingRate]) -> None:
        from hean.ml.funding.model import DEFAULT_DIR, FundingForecaster
        from hean_services.funding_predictor.logic import FundingPredictorLogic

        self.logic = FundingPredictorLogic(FundingForecaster.load(DEFAULT_DIR))
        for e in warmup:
            self.logic.add_settlement(e.venue, e.symbol, e.ts_ms, e.rate, e.interval_hours)


def replay(
    history: History,
    strategy: Strategy,
    cfg: BacktestConfig,
    progress: Progress | None = None,
) -> Replay:
    return asyncio.run(_replay(history, strategy, cfg, progress))


async def _replay(
    history: History, strategy: Strategy, cfg: BacktestConfig, progress: Progress | None
) -> Replay:
    needs = set(strategy.inputs)
    cascade = None
    if CascadeForecast in needs:
        if not any(isinstance(e, OpenInterest) for e in history.market):
            raise BacktestDataError(
                f"{strategy.name} needs CascadeForecast events, made from open interest and "
                "prices; this history has no open interest (use the cascade history: "
                "`hean backtest --strategy liquidation_hunter`)"
            )
        cascade = _cascade_predictor(
            history, cfg.cascade_model_dir, in_sample_note=cfg.walk_forward is None
        )
    venues = history.venues or sorted(
        {e.venue for e in history.funding} | {e.venue for e in history.warmup}
    )
    symbols = sorted(history.prices)
    predictor = _Predictor(history.warmup) if FundingForecast in needs else None
    stack = LiveStack(
        [strategy],
        venues,
        cfg.limits(strategy),
        cfg.costs,
        history.start_ms,
        predictor.logic if predictor else cascade,
        vol=lambda symbol, t: _vol(history, symbol, t),
    )
    await stack.start()
    out = Replay(stack, [], [], 0)
    if predictor is not None:
        fc = predictor.logic.forecaster
        out.model_version = fc.version if fc else None
    if cascade is not None and cascade.model is not None:
        out.model_version = cascade.model.version
    wf = cfg.walk_forward
    if wf is not None and predictor is None and cascade is None:
        raise ValueError(f"walk-forward: {strategy.name} uses no model")
    quotes: dict[tuple[str, str], Quote] = {}
    for e in history.warmup:
        quotes[(e.venue, e.symbol)] = _quote(e, cfg.costs)
    params = SpreadParams(cfg.spread_horizon_hours, cfg.costs.slip_bps("default"))
    prices: dict[str, tuple[float, float]] = {}

    async def market(t: int) -> None:
        # every book before any tick: risk checks stop-losses on ticks, and a unit whose legs
        # are on two venues must not look unhedged because one venue's price came first
        books: list[Event] = []
        ticks: list[Event] = []
        for symbol in symbols:
            if symbol not in prices:
                continue
            perp, spot = prices[symbol]
            for venue in venues:
                books.append(cfg.costs.book.book(venue, symbol, perp, t))
                ticks.append(PriceTick(ts_ms=t, venue=venue, symbol=symbol, mark=perp, index=spot))
                out.ref_prices[(venue, symbol, t)] = perp
        events = books + ticks
        out.events += len(events)
        await stack.publish(events)

    items = _timeline(history)
    total = len(items)
    done = 0
    for t, group in groupby(items, key=lambda x: x[0]):
        batch = list(group)
        stack.clock.set(t)
        if wf is not None:
            wf.maybe_retrain(t, predictor.logic if predictor else cascade, out)
        await stack.tick(stack.risk)  # the risk state the router's gate needs, fresh
        settled: list[FundingRate] = []
        others: list[Event] = []
        for _, order, item in batch:
            if order == 0:
                symbol, perp, spot = item  # type: ignore[misc]
                prices[symbol] = (perp, spot)
            elif order == 1:
                settled.append(item)  # type: ignore[arg-type]
            else:
                others.append(item)  # type: ignore[arg-type]
        await market(t)
        if settled:
            out.events += len(settled)
            await stack.publish(settled)
            for e in settled:
                quotes[(e.venue, e.symbol)] = _quote(e, cfg.costs)
        if others:
            out.events += len(others)
            await stack.publish(others)
        if cascade is not None:
            await stack.tick(cascade)
        if settled and FundingSpread in needs:
            changed = {e.symbol for e in settled}
            live = [q for q in quotes.values() if q.symbol in changed]
            spreads = all_spreads(live, params, t)
            out.events += len(spreads)
            await stack.publish(spreads)
        if settled and predictor is not None:
            await stack.tick(predictor.logic)
        out.equity_ms.append(t)
        out.equity_usd.append(stack.equity())
        done += len(batch)
        if progress is not None:
            progress(done, total)
    end = out.equity_ms[-1] if out.equity_ms else history.start_ms
    stack.clock.set(end)
    await stack.tick(stack.risk)
    await market(end)
    await stack.flatten("end-of-backtest")
    out.equity_ms.append(end)
    out.equity_usd.append(stack.equity())
    return out


def _cascade_predictor(
    history: History, model_dir: str | None, *, in_sample_note: bool = True
) -> ServiceLogic:
    """The live liquidation predictor with a daily cascade model, fed the bars before the range.

    Under walk-forward this model only receives the warm-up bars; each window's own model is
    swapped in before the window's first event. Momentum is measured over 23 h: daily bars
    have no 15-minute prices, and a window with no price in it would give no momentum at all.
    """
    import dataclasses

    from hean.backtest.cascade_history import DAY_MS, MOMENTUM_WINDOW_MS
    from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel
    from hean_services.liquidation_predictor.logic import (
        LiquidationPredictorLogic,
        PredictorConfig,
    )

    model = CascadeModel.load(model_dir or DEFAULT_DIR)
    if model.bar_ms != DAY_MS:
        raise BacktestDataError(
            f"cascade model {model.version} uses {model.bar_ms // 60_000} min bars; the history "
            "here is daily, so only a daily model can be backtested on it"
        )
    held_out = (model.meta.get("split") or {}).get("test_start_ms")
    if in_sample_note and held_out is not None and history.start_ms < int(held_out):
        note = (
            f"cascade model {model.version} was fitted on days before "
            f"{pd.Timestamp(int(held_out), unit='ms', tz='UTC'):%Y-%m-%d}: forecasts before "
            "then are in-sample (it saw those days), from then on out of sample"
        )
        if note not in history.notes:
            history.notes.append(note)
    config = dataclasses.replace(PredictorConfig(), momentum_window_ms=MOMENTUM_WINDOW_MS)
    logic = LiquidationPredictorLogic(model, config)
    warm: list[tuple[int, int, Event]] = []
    for symbol, series in history.prices.items():
        for t, px in zip(series.times_ms, series.perp, strict=True):
            if t < history.start_ms:
                for venue in history.venues:
                    tick = PriceTick(ts_ms=int(t), venue=venue, symbol=symbol, mark=float(px))
                    warm.append((int(t), 0, tick))
    warm += [(e.ts_ms, 1, e) for e in history.warmup]
    warm += [(e.ts_ms, 2, e) for e in history.market_warmup]
    for t, _, e in sorted(warm, key=lambda x: (x[0], x[1])):
        logic.on_event(e, t)
    logic.dirty.clear()
    return logic


def _vol(history: History, symbol: str, t_ms: int) -> float:
    series = history.prices.get(symbol)
    return series.vol_per_sqrt_ms(t_ms) if series is not None else float("nan")


def _quote(e: FundingRate, costs: CostModel) -> Quote:
    return Quote(
        venue=e.venue,
        symbol=e.symbol,
        rate=e.rate,
        interval_hours=e.interval_hours,
        taker_fee=costs.fee_bps(e.venue) / 1e4,
        ts_ms=e.ts_ms,
    )


def run_backtest(
    history: History, cfg: BacktestConfig, progress: Progress | None = None
) -> BacktestResult:
    """The strategy and, when asked, its naive baseline over the same history and costs."""
    name = canonical_name(cfg.strategy)
    strategy = build_strategy(name, cfg.strategy_config)
    conf = getattr(strategy, "config", None)
    size = getattr(conf, "size_frac", 0.02)
    main = replay(history, strategy, cfg, progress)
    base = None
    if cfg.baseline:
        naive: Strategy | None = None
        if FundingSpread in strategy.inputs:
            naive = NaiveSpread(size)
        elif FundingForecast in strategy.inputs or FundingRate in strategy.inputs:
            perp_hedge = getattr(conf, "hedge", "spot") == "perp"
            naive = NaiveCarry(size, getattr(conf, "hedge_venue", None) if perp_hedge else None)
        if naive is not None:
            base_cfg = BacktestConfig(**{**cfg.__dict__, "walk_forward": None})
            base = replay(history, naive, base_cfg)
    return BacktestResult(cfg, history, main, base)
