"""Numbers and files from a backtest: metrics JSON, trades CSV, equity/drawdown PNG, HTML.

Returns are measured on the equity curve resampled to UTC days (the last equity of each day,
carried forward over days without events). Sharpe and Sortino are annualised with sqrt(365)
from daily returns and a zero risk-free rate; max drawdown is the deepest fall from a running
peak of the event-level curve.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hean.backtest.accounts import accounts
from hean.backtest.engine import BacktestResult, Replay
from hean.strategies import build as build_strategy
from hean.strategies import canonical_name

DAY_MS = 86_400_000


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def daily_equity(r: Replay, start_ms: int, end_ms: int, capital: float) -> pd.Series:
    s = pd.Series(r.equity_usd, index=pd.to_datetime(r.equity_ms, unit="ms", utc=True))
    s = s[~s.index.duplicated(keep="last")]
    days = pd.date_range(
        pd.Timestamp(start_ms, unit="ms", tz="UTC").normalize(),
        pd.Timestamp(max(end_ms - 1, start_ms), unit="ms", tz="UTC").normalize(),
        freq="D",
    )
    daily = s.resample("D").last().reindex(days).ffill().fillna(capital)
    return daily


def metrics(r: Replay, start_ms: int, end_ms: int, capital: float) -> dict[str, object]:
    a = accounts(r, capital)
    eq = np.asarray(r.equity_usd, dtype=float) if r.equity_usd else np.asarray([capital])
    final = float(eq[-1])
    total = final / capital - 1.0
    days = max((end_ms - start_ms) / DAY_MS, 1e-9)
    daily = daily_equity(r, start_ms, end_ms, capital)
    rets = daily.pct_change().dropna().to_numpy()
    sd = float(rets.std(ddof=1)) if len(rets) > 1 else 0.0
    downside = rets[rets < 0]
    dsd = float(np.sqrt(np.mean(downside**2))) if len(downside) else 0.0
    mean = float(rets.mean()) if len(rets) else 0.0
    peak = np.maximum.accumulate(np.concatenate([[capital], eq]))
    dd = (np.concatenate([[capital], eq]) - peak) / peak
    monthly = daily.resample("ME").last()
    prev = monthly.shift(1).fillna(capital)
    annualised = (1 + total) ** (365.0 / days) - 1 if total > -1 else -1.0
    return {
        "capital_usd": capital,
        "final_equity_usd": round(final, 6),
        "pnl_usd": round(a.pnl_usd, 6),
        "funding_usd": round(a.funding_usd, 6),
        "price_pnl_usd": round(a.price_pnl_usd, 6),
        "fees_usd": round(a.fees_usd, 6),
        "slippage_usd": round(a.slippage_usd, 6),
        "total_return_frac": total,
        "annualised_return_frac": annualised,
        "monthly_return_frac": {
            k.strftime("%Y-%m"): float(v / pv - 1)
            for k, v, pv in zip(monthly.index, monthly, prev, strict=True)
        },
        "sharpe": mean / sd * math.sqrt(365) if sd > 0 else 0.0,
        "sortino": mean / dsd * math.sqrt(365) if dsd > 0 else 0.0,
        "max_drawdown_frac": float(-dd.min()) + 0.0,
        "trades": a.trades,
        "orders_filled": len(r.record.fills),
        "signals": len(r.signals),
        "turnover_usd": round(a.turnover_usd, 6),
        "turnover_x_capital": a.turnover_usd / capital,
        "rejected": a.rejections,
        "refused_by_router": a.refusals,
        "leg_failures": a.leg_failures,
        "units_unwound": a.unwinds,
        "unwind_cost_usd": round(a.unwind_cost_usd, 6),
        "late_legs": a.late_legs,
        "late_leg_move_usd": round(a.late_leg_move_usd, 6),
        "halts": a.halts,
        "events_replayed": r.events,
    }


def buy_and_hold(result: BacktestResult) -> dict[str, object]:
    """Each covered symbol's perpetual bought at the start and sold at the end, equal weight."""
    h = result.history
    rets = {}
    for symbol, series in h.prices.items():
        a, b = series.at(h.start_ms), series.at(h.end_ms - 1)
        if a and b:
            rets[symbol] = b[0] / a[0] - 1.0
    mean = float(np.mean(list(rets.values()))) if rets else 0.0
    return {"total_return_frac": mean, "per_symbol": rets, "costs": "none charged"}


def cascade_summary(result: BacktestResult) -> dict[str, object] | None:
    """How often the predictor spoke and how high it went: why the hunter did or did not trade."""
    fcs = result.replay.record.cascades
    if not fcs:
        return None
    conf = getattr(
        build_strategy(canonical_name(result.config.strategy), result.config.strategy_config),
        "config",
        None,
    )
    threshold = float(getattr(conf, "threshold", 0.7))
    top = max(fcs, key=lambda f: f.probability)
    return {
        "forecasts": len(fcs),
        "threshold": threshold,
        "at_or_above_threshold": sum(f.probability >= threshold for f in fcs),
        "max_probability": top.probability,
        "max_at": f"{_iso(top.ts_ms)} {top.venue}:{top.symbol} {top.direction}",
        "mean_probability": float(np.mean([f.probability for f in fcs])),
    }


def summary(result: BacktestResult) -> dict[str, object]:
    h, c = result.history, result.config
    limits = c.limits(build_strategy(canonical_name(c.strategy), c.strategy_config))
    out: dict[str, object] = {
        "strategy": c.strategy,
        "range": {"from": _iso(h.start_ms), "to": _iso(h.end_ms)},
        "capital_usd": c.capital,
        "costs": {
            "liquidity": c.costs.liquidity,
            "slippage_bps_override": c.costs.slippage_bps,
            "book_model": c.costs.book.describe(),
            "leg_failure_prob": c.costs.leg_failure_prob,
            "leg_latency_ms": c.costs.leg_latency_ms,
            "seed": c.costs.seed,
            "venues": {
                v: {"fee_bps": c.costs.fee_bps(v), "slippage_bps": c.costs.slip_bps(v)}
                for v in sorted({e.venue for e in h.funding})
            },
        },
        "risk_limits": {
            k: getattr(limits, k)
            for k in limits.__dataclass_fields__  # type: ignore[attr-defined]
        },
        "strategy_config": c.strategy_config or {},
        "coverage": h.coverage(),
        "model_version": result.replay.model_version,
        "walk_forward_models": result.replay.models,
        "result": metrics(result.replay, h.start_ms, h.end_ms, c.capital),
        "cascade_forecasts": cascade_summary(result),
        "buy_and_hold": buy_and_hold(result),
    }
    if result.baseline is not None:
        b = result.baseline
        name = b.signals[0].strategy if b.signals else "naive"
        out["naive_baseline"] = {"name": name, **metrics(b, h.start_ms, h.end_ms, c.capital)}
    return out


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    """One row per executed unit (entry, exit, stop exit, final flatten) with its legs."""
    a = accounts(result.replay, result.config.capital)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "intent_id",
                "time_utc",
                "kind",
                "symbol",
                "legs",
                "notional_usd",
                "fees_usd",
                "slippage_usd",
                "status",
                "unwound",
                "unwind_cost_usd",
                "reason",
            ]
        )
        for row in a.rows:
            legs = " | ".join(
                f"{f.side} {f.qty:.6g} {f.venue} {f.symbol}"
                + (" spot" if f.instrument == "spot" else "")
                + f" @ {f.price:.6g}"
                + (" (unwind)" if f.client_order_id.startswith("U") else "")
                for f in row.fills
            )
            w.writerow(
                [
                    row.intent_id,
                    _iso(row.ts_ms),
                    row.kind,
                    row.symbol,
                    legs,
                    f"{row.notional_usd:.6f}",
                    f"{row.fees_usd:.6f}",
                    f"{row.slippage_usd:.6f}",
                    row.status,
                    row.unwound,
                    f"{row.unwind_cost_usd:.6f}",
                    row.reason,
                ]
            )


def plot(result: BacktestResult, path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.replay
    times = pd.to_datetime(r.equity_ms, unit="ms", utc=True)
    eq = np.asarray(r.equity_usd)
    peak = np.maximum.accumulate(np.concatenate([[result.config.capital], eq]))[1:]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    ax1.plot(times, eq, label=result.config.strategy, lw=1.4)
    if result.baseline is not None:
        b = result.baseline
        ax1.plot(
            pd.to_datetime(b.equity_ms, unit="ms", utc=True),
            b.equity_usd,
            label="naive baseline",
            lw=1,
            alpha=0.7,
        )
    ax1.axhline(result.config.capital, color="grey", lw=0.6, ls=":")
    ax1.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax1.set_ylabel("equity (USD)")
    ax1.legend(loc="best")
    ax1.set_title(
        f"{result.config.strategy}: {_iso(result.history.start_ms)[:10]} to "
        f"{_iso(result.history.end_ms)[:10]} (fees, slippage and funding charged)",
        fontsize=10,
    )
    ax2.fill_between(times, (eq - peak) / peak * 100, 0, color="tab:red", alpha=0.4)
    ax2.set_ylabel("drawdown (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _html(summary_: dict, png: bytes) -> str:
    res = summary_["result"]
    rows = "".join(
        f"<tr><td>{k}</td><td>{v}</td></tr>"
        for k, v in res.items()  # type: ignore[union-attr]
        if not isinstance(v, dict)
    )
    img = base64.b64encode(png).decode()
    return (
        "<!doctype html><meta charset='utf-8'><title>HEAN backtest</title>"
        f"<h1>{summary_['strategy']}</h1><p>{summary_['range']}</p>"
        f"<img src='data:image/png;base64,{img}'><table>{rows}</table>"
        f"<pre>{json.dumps(summary_, indent=2, default=str)}</pre>"
    )


def write_outputs(result: BacktestResult, out_dir: Path, *, plot_png: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    s = summary(result)
    (out_dir / "results.json").write_text(json.dumps(s, indent=2, default=str))
    write_trades_csv(result, out_dir / "trades.csv")
    if plot_png:
        png = plot(result, out_dir / "equity.png")
        (out_dir / "report.html").write_text(_html(s, png))
    return s
