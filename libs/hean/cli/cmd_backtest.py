"""``hean backtest``: replay a live strategy over real history with funding, fees and slippage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DAY_MS = 86_400_000


def register(sub: argparse._SubParsersAction) -> None:
    from hean.strategies import STRATEGIES

    p = sub.add_parser("backtest", help="backtest a strategy on history", description=__doc__)
    p.add_argument("--strategy", required=True, help=f"one of: {', '.join(sorted(STRATEGIES))}")
    p.add_argument("--days", type=int, default=30, help="length of the range (default 30)")
    p.add_argument("--from", dest="start", help="start, UTC date or time (default: end - days)")
    p.add_argument("--to", dest="end", help="end, UTC (default: the end of the data)")
    p.add_argument("--venues", help="comma-separated venues (default: all in the data)")
    p.add_argument("--symbols", help="comma-separated canonical symbols, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--capital", type=float, default=10_000.0, help="starting equity in USD")
    p.add_argument(
        "--fees", default="taker", choices=("taker", "maker"), help="fee schedule used for fills"
    )
    p.add_argument(
        "--slippage-model",
        default="venue",
        help="synthetic book for paper fills: 'venue' (each venue's 2 bps per fill), 'bps:N' "
        "(N bps per fill), or 'book:H:USD[:STEP[:LEVELS]]' (best level H bps from the recorded "
        "price, LEVELS levels of USD notional STEP bps apart)",
    )
    p.add_argument(
        "--leg-failure",
        type=float,
        default=0.0,
        help="probability that a venue refuses one leg of a new unit (0..1); the live router "
        "then unwinds the other legs",
    )
    p.add_argument(
        "--leg-latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="every leg after the first of a new unit fills MS later, at a price moved by the "
        "symbol's trailing volatility over that delay (a seeded random walk)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the leg-failure and latency draws")
    p.add_argument("--config", help="strategy settings as JSON, e.g. '{\"hold_hours\": 96}'")
    p.add_argument(
        "--risk",
        help="risk limits as JSON (RiskLimits fields), e.g. '{\"max_loss_streak\": 20}'; "
        "default: the risk service's defaults",
    )
    p.add_argument("--max-gross", type=float, help="gross exposure cap x equity (risk default 0.5)")
    p.add_argument("--data", help="data directory (default: $HEAN_DATA_DIR)")
    p.add_argument(
        "--from-store",
        metavar="NATS_URL",
        help="read settlements from the JetStream history store instead of --data; prices from "
        "--data/$HEAN_DATA_DIR when given, else from the mark prices stored with settlements",
    )
    p.add_argument(
        "--walk-forward",
        action="store_true",
        help="retrain the strategy's model (funding LSTM, or daily cascade forest for "
        "liquidation_hunter) before each window on data before it only",
    )
    p.add_argument("--wf-window-days", type=float, default=30.0, help="walk-forward window")
    p.add_argument(
        "--wf-epochs",
        type=int,
        default=3,
        help="funding model: epochs per walk-forward retraining (default 3)",
    )
    p.add_argument(
        "--wf-max-train",
        type=int,
        default=20_000,
        help="funding model: sequences per epoch when retraining",
    )
    p.add_argument(
        "--cascade-model",
        metavar="DIR",
        help="daily cascade model for liquidation_hunter (default: the shipped artifact)",
    )
    p.add_argument("--out", help="output directory (default: backtests/<strategy>-<range>)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG and HTML report")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline run")
    p.set_defaults(func=run)


def _ms(text: str) -> int:
    import pandas as pd

    ts = pd.Timestamp(text)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


class _Progress:
    """A progress line on stderr, redrawn every 2 %; silent for short runs."""

    def __init__(self, label: str, min_total: int = 5_000) -> None:
        self.label = label
        self.min_total = min_total
        self.last = -1
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < self.min_total:
            return
        pct = done * 100 // total
        if pct // 2 == self.last // 2 and done != total:
            return
        self.last = pct
        bar = "#" * (pct // 4)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"\r{self.label} [{bar:<25}] {pct:3d}% {done}/{total} ({elapsed:.0f}s)")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _uses_cascades(name: str, config: dict | None) -> bool:
    from hean.strategies import build
    from hean_proto.events import CascadeForecast

    return CascadeForecast in build(name, config).inputs


def _json(text: str | None, flag: str) -> dict | None:
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def run(args: argparse.Namespace) -> int:
    from hean.backtest import BacktestConfig, BacktestDataError, run_backtest
    from hean.backtest.costs import CostModel, parse_slippage_model
    from hean.backtest.data import (
        data_end_ms,
        history_from_store,
        load_history,
        read_store,
    )
    from hean.backtest.report import write_outputs
    from hean.strategies import STRATEGIES, canonical_name

    name = canonical_name(args.strategy)
    if name not in STRATEGIES:
        print(f"hean backtest: unknown strategy {args.strategy!r}; known: {', '.join(STRATEGIES)}")
        return 2
    data = args.data or os.environ.get("HEAN_DATA_DIR")
    venues = args.venues.split(",") if args.venues else None
    symbols = args.symbols.split(",") if args.symbols else None
    try:
        slippage, book = parse_slippage_model(args.slippage_model)
        config = _json(args.config, "--config")
        risk = _json(args.risk, "--risk") or {}
        if args.max_gross is not None:
            risk["max_gross_exposure_frac"] = args.max_gross
        cascade = _uses_cascades(name, config)
        if cascade and args.from_store:
            raise ValueError(f"{name} runs on the daily cascade history only (no --from-store)")
        if cascade:
            from hean.backtest.cascade_history import last_bar_end_ms, load_cascade_history

            end = _ms(args.end) if args.end else last_bar_end_ms(data)
            start = _ms(args.start) if args.start else end - args.days * DAY_MS
            history = load_cascade_history(data, start, end, symbols=symbols, venues=venues)
        elif args.from_store:
            until = _ms(args.end) if args.end else None
            events = read_store(args.from_store, until)
            end = until or max(e.ts_ms for e in events) + 1
            start = _ms(args.start) if args.start else end - args.days * DAY_MS
            history = history_from_store(
                events,
                args.from_store,
                start,
                end,
                price_dir=data,
                venues=venues,
                symbols=symbols,
                keep_frame=args.walk_forward,
            )
        else:
            end = _ms(args.end) if args.end else data_end_ms(data) + 1
            start = _ms(args.start) if args.start else end - args.days * DAY_MS
            history = load_history(
                data, start, end, venues=venues, symbols=symbols, keep_frame=args.walk_forward
            )
        walk = None
        if args.walk_forward and cascade:
            walk = _cascade_walk_forward(data, start, args)
        elif args.walk_forward:
            from hean.backtest.walkforward import WalkForward, small_config
            from hean.strategies import build
            from hean_proto.events import FundingForecast

            if FundingForecast not in build(name, config).inputs:
                raise ValueError(f"--walk-forward: {name} uses no model")
            train = small_config()
            train.epochs = args.wf_epochs
            train.max_train = args.wf_max_train
            assert history.frame is not None
            walk = WalkForward(history.frame, history.start_ms, args.wf_window_days, train)
        cfg = BacktestConfig(
            strategy=name,
            capital=args.capital,
            costs=CostModel(
                liquidity=args.fees,
                slippage_bps=slippage,
                book=book,
                leg_failure_prob=args.leg_failure,
                leg_latency_ms=args.leg_latency,
                seed=args.seed,
            ),
            risk=risk,
            strategy_config=config,
            baseline=not args.no_baseline,
            walk_forward=walk,
            cascade_model_dir=args.cascade_model,
        )
        cfg.limits()  # unknown or out-of-range risk limits fail here, before the replay
        result = run_backtest(history, cfg, _Progress(f"backtest {name}"))
    except (BacktestDataError, ValueError, json.JSONDecodeError) as exc:
        print(f"hean backtest: {exc}")
        return 2
    out = (
        Path(args.out)
        if args.out
        else Path("backtests")
        / (
            f"{name}-{time.strftime('%Y%m%d', time.gmtime(start / 1000))}"
            f"-{time.strftime('%Y%m%d', time.gmtime(end / 1000))}"
        )
    )
    s = write_outputs(result, out, plot_png=not args.no_plot)
    print(render(s))
    print(
        f"\nwritten to {out}/ (results.json, trades.csv"
        + ("" if args.no_plot else ", equity.png, report.html")
        + ")"
    )
    return 0


def _cascade_walk_forward(data: str | None, start: int, args: argparse.Namespace):
    """Every daily bar in the data (all symbols: other symbols' past is no look-ahead) and the
    cascade model whose recipe each window repeats."""
    from hean.backtest import BacktestDataError
    from hean.backtest.walkforward import CascadeWalkForward
    from hean.ml.cascade.data import CascadeDataError, load_bars
    from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel, ModelLoadError

    try:
        bars = load_bars(data)
        recipe = CascadeModel.load(args.cascade_model or DEFAULT_DIR)
    except (CascadeDataError, ModelLoadError) as exc:
        raise BacktestDataError(str(exc)) from None
    return CascadeWalkForward(bars, start, recipe, args.wf_window_days)


def render(s: dict) -> str:
    r = s["result"]
    cov = s["coverage"]["funding_series"]
    lines = [
        f"strategy {s['strategy']}  {s['range']['from']} -> {s['range']['to']}",
        f"covered: {', '.join(sorted(cov)) or 'no funding series'}"
        + (
            ""
            if len(s["coverage"]["symbols"]) == len({k.split(":")[1] for k in cov})
            else f"; prices of {len(s['coverage']['symbols'])} symbols"
        ),
        f"capital {r['capital_usd']:,.2f} USD -> {r['final_equity_usd']:,.2f} USD "
        f"({r['total_return_frac'] * 100:+.3f} %, "
        f"annualised {r['annualised_return_frac'] * 100:+.2f} %)",
        f"  funding {r['funding_usd']:+,.2f}  price {r['price_pnl_usd']:+,.2f}  "
        f"fees -{r['fees_usd']:,.2f}  slippage -{r['slippage_usd']:,.2f}",
        f"  Sharpe {r['sharpe']:.2f}  Sortino {r['sortino']:.2f}  "
        f"max drawdown {r['max_drawdown_frac'] * 100:.3f} %",
        f"  trades {r['trades']} ({r['orders_filled']} fills)  "
        f"turnover {r['turnover_x_capital']:.2f}x capital",
        f"  risk rejections: {r['rejected'] or 'none'}",
        f"  legs refused by a venue {r['leg_failures']}, units unwound {r['units_unwound']} "
        f"(cost {r['unwind_cost_usd']:.2f} USD); late legs {r['late_legs']} "
        f"(price move {r['late_leg_move_usd']:+.2f} USD); "
        f"halts: {'; '.join(r['halts']) or 'none'}",
        "  monthly: "
        + ", ".join(f"{k} {v * 100:+.3f} %" for k, v in r["monthly_return_frac"].items()),
    ]
    if "naive_baseline" in s:
        b = s["naive_baseline"]
        lines.append(
            f"naive baseline ({b['name']}): {b['total_return_frac'] * 100:+.3f} %, "
            f"funding {b['funding_usd']:+,.2f}, fees -{b['fees_usd']:,.2f}, trades {b['trades']}"
        )
    c = s.get("cascade_forecasts")
    if c:
        lines.append(
            f"cascade forecasts {c['forecasts']}: {c['at_or_above_threshold']} at or above the "
            f"threshold {c['threshold']:g}; highest {c['max_probability']:.3f} ({c['max_at']}), "
            f"mean {c['mean_probability']:.3f}"
        )
    bh = s["buy_and_hold"]
    lines.append(
        f"buy and hold (perps, equal weight, no costs): {bh['total_return_frac'] * 100:+.2f} %"
    )
    for m in s.get("walk_forward_models") or []:
        lines.append(f"model {m['version']} from {m['from_utc']} (trained on {m['trained_on']})")
    if not s.get("walk_forward_models") and s.get("model_version"):
        lines.append(f"model {s['model_version']} (shipped)")
    lines.append(f"book model: {s['costs']['book_model']}")
    for note in s["coverage"]["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
