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
        help="'venue' (each venue's bps per fill) or 'bps:N' (N bps per fill everywhere)",
    )
    p.add_argument("--config", help="strategy settings as JSON, e.g. '{\"hold_hours\": 96}'")
    p.add_argument("--max-gross", type=float, default=1.0, help="gross exposure cap x equity")
    p.add_argument("--data", help="data directory (default: $HEAN_DATA_DIR)")
    p.add_argument("--out", help="output directory (default: backtests/<strategy>-<range>)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG and HTML report")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline run")
    p.set_defaults(func=run)


def _ms(text: str) -> int:
    import pandas as pd

    ts = pd.Timestamp(text)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _slippage(text: str) -> float | None:
    if text == "venue":
        return None
    kind, _, value = text.partition(":")
    if kind != "bps" or not value:
        raise ValueError(f"--slippage-model {text!r}: expected 'venue' or 'bps:N'")
    bps = float(value)
    if not 0 <= bps <= 1000:
        raise ValueError(f"--slippage-model {text!r}: bps must be within 0..1000")
    return bps


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


def run(args: argparse.Namespace) -> int:
    from hean.backtest import BacktestConfig, BacktestDataError, load_history, run_backtest
    from hean.backtest.data import data_end_ms
    from hean.backtest.portfolio import CostModel, Limits
    from hean.backtest.report import write_outputs
    from hean.strategies import STRATEGIES, canonical_name

    name = canonical_name(args.strategy)
    if name not in STRATEGIES:
        print(f"hean backtest: unknown strategy {args.strategy!r}; known: {', '.join(STRATEGIES)}")
        return 2
    data = args.data or os.environ.get("HEAN_DATA_DIR")
    try:
        slippage = _slippage(args.slippage_model)
        config = json.loads(args.config) if args.config else None
        if config is not None and not isinstance(config, dict):
            raise ValueError("--config must be a JSON object")
        end = _ms(args.end) if args.end else data_end_ms(data) + 1
        start = _ms(args.start) if args.start else end - args.days * DAY_MS
        history = load_history(
            data,
            start,
            end,
            venues=args.venues.split(",") if args.venues else None,
            symbols=args.symbols.split(",") if args.symbols else None,
        )
        limits_cap = (config or {}).get("max_size_frac", 0.02)
        cfg = BacktestConfig(
            strategy=name,
            capital=args.capital,
            costs=CostModel(liquidity=args.fees, slippage_bps=slippage),
            limits=Limits(max_size_frac=limits_cap, max_gross_frac=args.max_gross),
            strategy_config=config,
            baseline=not args.no_baseline,
        )
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


def render(s: dict) -> str:
    r = s["result"]
    cov = s["coverage"]["funding_series"]
    lines = [
        f"strategy {s['strategy']}  {s['range']['from']} -> {s['range']['to']}",
        f"covered: {', '.join(sorted(cov))}",
        f"capital {r['capital_usd']:,.2f} USD -> {r['final_equity_usd']:,.2f} USD "
        f"({r['total_return_frac'] * 100:+.3f} %, "
        f"annualised {r['annualised_return_frac'] * 100:+.2f} %)",
        f"  funding {r['funding_usd']:+,.2f}  price {r['price_pnl_usd']:+,.2f}  "
        f"fees -{r['fees_usd']:,.2f}  slippage -{r['slippage_usd']:,.2f}",
        f"  Sharpe {r['sharpe']:.2f}  Sortino {r['sortino']:.2f}  "
        f"max drawdown {r['max_drawdown_frac'] * 100:.3f} %",
        f"  trades {r['trades']}  turnover {r['turnover_x_capital']:.2f}x capital  "
        f"rejected {r['rejected'] or 'none'}",
        "  monthly: "
        + ", ".join(f"{k} {v * 100:+.3f} %" for k, v in r["monthly_return_frac"].items()),
    ]
    if "naive_baseline" in s:
        b = s["naive_baseline"]
        lines.append(
            f"naive baseline ({b['name']}): {b['total_return_frac'] * 100:+.3f} %, "
            f"funding {b['funding_usd']:+,.2f}, fees -{b['fees_usd']:,.2f}, trades {b['trades']}"
        )
    bh = s["buy_and_hold"]
    lines.append(
        f"buy and hold (perps, equal weight, no costs): {bh['total_return_frac'] * 100:+.2f} %"
    )
    for note in s["coverage"]["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
