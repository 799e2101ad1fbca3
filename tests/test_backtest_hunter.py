"""liquidation_hunter in the backtester: daily bars and open interest through the live predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hean.backtest import BacktestConfig, BacktestDataError, replay
from hean.backtest.accounts import accounts
from hean.backtest.cascade_history import (
    CLOSE_OFFSET_MS,
    DAY_MS,
    bar_ticks,
    load_cascade_history,
)
from hean.cli.main import main as cli
from hean.ml.cascade.synth import synthetic_bars
from hean.strategies import build

# thresholds low enough that the shipped daily model trades the synthetic market: a wide
# target so that the hunter's expected edge is positive at low probabilities, and risk's
# confidence floor lowered to match (the live default 0.6 would turn every entry away)
LOOSE = {
    "threshold": 0.08,
    "exit_probability": 0.02,
    "min_momentum_frac": 0.0,
    "take_profit_frac": 0.2,
}
RISK = {"min_confidence": 0.05}


def write_cascade_dir(root: Path, n_bars: int = 85, seed: int = 3) -> tuple[Path, int]:
    """Klines and Coinalyze-style open interest in the shared data's layout (synthetic market)."""
    bars = synthetic_bars(n_symbols=2, n_bars=n_bars, seed=seed)
    kdir = root / "klines" / "silertrades_gravestone-data" / "klines_1d"
    odir = root / "open_interest" / "smoothbrainquant_coinalyze"
    kdir.mkdir(parents=True)
    odir.mkdir(parents=True)
    oi_rows = []
    for i, (_sym, g) in enumerate(bars.groupby("symbol")):
        pair = f"S{i}USDT"
        g.assign(timestamp=g["time_ms"], volume=1.0)[
            ["timestamp", "open", "high", "low", "close", "volume"]
        ].to_csv(kdir / f"{pair}.csv", index=False)
        for r in g.itertuples():
            oi_rows.append(
                {
                    "coin_symbol": f"S{i}",
                    "symbol": f"S{i}USDT_PERP.A",
                    "timestamp": r.time_ms // 1000,
                    "oi_close": r.oi_units * r.close,
                }
            )
    pd.DataFrame(oi_rows).to_csv(odir / "oi.csv", index=False)
    return root, int(bars["time_ms"].min())


def hunt_args(root: Path, out: Path, days: int, *extra: str) -> list[str]:
    """`hean backtest` of the hunter at the loose thresholds, without plots."""
    loose = ["--config", json.dumps(LOOSE), "--risk", json.dumps(RISK)]
    return [
        *["backtest", "--strategy", "liquidation_hunter", "--data", str(root)],
        *["--days", str(days), *loose, "--out", str(out), "--no-plot", *extra],
    ]


def scaled_from(root: Path, other: Path, cut: int) -> Path:
    """A copy of ``root`` whose bars and open interest from ``cut`` on are 37 % higher."""
    for f in root.rglob("*.csv"):
        df = pd.read_csv(f)
        later = (df["timestamp"] * (1000 if "oi_close" in df else 1)) >= cut
        cols = ["oi_close"] if "oi_close" in df else ["open", "high", "low", "close"]
        df.loc[later, cols] = df.loc[later, cols] * 1.37
        out = other / f.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return other


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory) -> tuple[Path, int]:
    return write_cascade_dir(tmp_path_factory.mktemp("cascade"))


def test_a_daily_bar_becomes_ticks_that_never_come_before_their_time():
    down = bar_ticks(0, 100.0, 104.0, 90.0, 95.0)
    assert [p for _, p in down] == [100.0, 104.0, 90.0, 95.0]  # high first on a down day
    up = bar_ticks(0, 100.0, 112.0, 97.0, 110.0)
    assert [p for _, p in up] == [100.0, 97.0, 112.0, 110.0]  # low first on an up day
    times = [t for t, _ in up]
    assert times == sorted(times) and times[0] == 0 and times[-1] == CLOSE_OFFSET_MS < DAY_MS
    assert times[1] > DAY_MS - 5 * 60_000  # the extremes only at the very end of the day


def test_the_hunter_trades_the_live_chain_on_daily_history(cascade_dir):
    root, t0 = cascade_dir
    start, end = t0 + 42 * DAY_MS, t0 + 85 * DAY_MS
    history = load_cascade_history(root, start, end)
    assert sorted(history.prices) == ["S0USDT", "S1USDT"] and history.venues == ["binance"]
    assert history.market and all(e.ts_ms >= start for e in history.market)
    assert history.market_warmup and all(e.ts_ms < start for e in history.market_warmup)
    cfg = BacktestConfig(
        strategy="liquidation_hunter", strategy_config=LOOSE, risk=RISK, baseline=False
    )
    r = replay(history, build("liquidation_hunter", LOOSE), cfg)
    fcs = r.record.cascades
    assert fcs and all(start <= f.ts_ms < end for f in fcs)
    entries = [s for s in r.signals if not s.reduce_only]
    assert entries, "the loose thresholds should let the hunter in at least once"
    by_time = {(f.ts_ms, f.symbol): f for f in fcs}
    for s in entries:
        fc = by_time[(s.ts_ms, s.symbol)]
        assert fc.probability >= LOOSE["threshold"]
        assert [leg.side for leg in s.legs] == ["sell" if fc.direction == "down" else "buy"]
        assert s.size_frac <= 0.02 and s.stop_loss_frac == 0.02 and s.take_profit_frac == 0.2
    a = accounts(r, 10_000.0)
    assert a.trades >= 1 and a.fees_usd > 0
    assert r.equity_usd[-1] - 10_000.0 == pytest.approx(a.pnl_usd, abs=1e-9)
    assert not r.stack.router.book.ledger.open_positions()
    again = replay(load_cascade_history(root, start, end), build("liquidation_hunter", LOOSE), cfg)
    assert again.equity_usd == r.equity_usd


def test_changing_later_bars_changes_nothing_before_them(cascade_dir, tmp_path: Path):
    root, t0 = cascade_dir
    start, cut, end = t0 + 42 * DAY_MS, t0 + 60 * DAY_MS, t0 + 75 * DAY_MS
    other = scaled_from(root, tmp_path / "shifted", cut)
    cfg = BacktestConfig(
        strategy="liquidation_hunter", strategy_config=LOOSE, risk=RISK, baseline=False
    )
    a = replay(load_cascade_history(root, start, end), build("liquidation_hunter", LOOSE), cfg)
    b = replay(load_cascade_history(other, start, end), build("liquidation_hunter", LOOSE), cfg)

    def before(r):
        return [(f.ts_ms, f.symbol, f.probability) for f in r.record.cascades if f.ts_ms < cut]

    assert before(a) and before(a) == before(b)
    assert [s.id for s in a.signals if s.ts_ms < cut] == [s.id for s in b.signals if s.ts_ms < cut]
    n = np.searchsorted(a.equity_ms, cut)
    assert a.equity_usd[:n] == b.equity_usd[:n]
    assert [(f.ts_ms, f.probability) for f in a.record.cascades if f.ts_ms >= cut] != [
        (f.ts_ms, f.probability) for f in b.record.cascades if f.ts_ms >= cut
    ]


def test_clear_errors_for_histories_the_hunter_cannot_use(cascade_dir, tmp_path: Path):
    root, t0 = cascade_dir
    with pytest.raises(BacktestDataError, match="Binance USD-M only"):
        load_cascade_history(root, t0 + 45 * DAY_MS, t0 + 50 * DAY_MS, venues=["okx"])
    with pytest.raises(BacktestDataError, match="no daily bars"):
        load_cascade_history(root, t0 + 500 * DAY_MS, t0 + 510 * DAY_MS)
    with pytest.raises(BacktestDataError, match="need"):
        load_cascade_history(tmp_path, t0, t0 + DAY_MS)


def test_cli_backtests_the_hunter(cascade_dir, tmp_path: Path, capsys):
    root, _ = cascade_dir
    out = tmp_path / "hunt"
    rc = cli(hunt_args(root, out, 10))
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "cascade forecasts" in text and "momentum is measured over 23 h" in text
    assert "forecasts before then are in-sample" in text  # the synthetic days precede 2025
    assert (out / "results.json").exists() and (out / "trades.csv").exists()
    rc = cli(
        [
            "backtest",
            "--strategy",
            "liquidation_hunter",
            "--data",
            str(root),
            "--from-store",
            "nats://127.0.0.1:1",
        ]
    )
    assert rc == 2 and "daily cascade history only" in capsys.readouterr().out


def _walk_forward_replay(root: Path, start: int, end: int):
    from hean.backtest.walkforward import CascadeWalkForward
    from hean.ml.cascade.data import load_bars
    from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel

    wf = CascadeWalkForward(load_bars(root), start, CascadeModel.load(DEFAULT_DIR), 15)
    cfg = BacktestConfig(
        strategy="liquidation_hunter",
        strategy_config=LOOSE,
        risk=RISK,
        baseline=False,
        walk_forward=wf,
    )
    history = load_cascade_history(root, start, end)
    return replay(history, build("liquidation_hunter", LOOSE), cfg), wf


@pytest.fixture(scope="module")
def long_cascade_dir(tmp_path_factory) -> tuple[Path, int]:
    """240 days: enough past before each window for the cascade model's own time split."""
    return write_cascade_dir(tmp_path_factory.mktemp("cascade_long"), n_bars=240)


def test_walk_forward_trains_each_cascade_model_only_on_bars_closed_before_its_window(
    long_cascade_dir, tmp_path: Path
):
    root, t0 = long_cascade_dir
    start, end = t0 + 170 * DAY_MS, t0 + 215 * DAY_MS
    r, wf = _walk_forward_replay(root, start, end)
    models = r.models
    assert [m["from_ms"] for m in models] == [start, start + 15 * DAY_MS, start + 30 * DAY_MS]
    assert [m["to_ms"] for m in models] == [start + 15 * DAY_MS, start + 30 * DAY_MS, None]
    for m in models:
        closed = wf.bars["time_ms"] + DAY_MS <= m["from_ms"]
        assert m["trained_on_bars"] == int(closed.sum()) > 0
        assert m["last_bar_ms"] + DAY_MS <= m["from_ms"]  # its newest bar had closed
        assert m["last_bar_ms"] == int(wf.bars.loc[closed, "time_ms"].max())
        assert m["version"].startswith("cascade-rf-wf")
    assert models[1]["trained_on_bars"] > models[0]["trained_on_bars"]
    assert len({m["version"] for m in models}) == 3
    assert r.record.cascades
    for f in r.record.cascades:  # each forecast came from its window's model
        window = max(i for i, m in enumerate(models) if m["from_ms"] <= f.ts_ms)
        assert f.model_version == models[window]["version"]

    # bars from the second window on are changed: the models of the windows before are the
    # same weights (same digest) and every forecast before the change is the same
    cut = start + 15 * DAY_MS
    r2, _ = _walk_forward_replay(scaled_from(root, tmp_path / "scaled", cut), start, end)
    assert [m["version"] for m in r2.models[:2]] == [m["version"] for m in models[:2]]

    def forecasts(rr, keep):
        return [(f.ts_ms, f.symbol, f.probability) for f in rr.record.cascades if keep(f.ts_ms)]

    assert forecasts(r, lambda t: t < cut) == forecasts(r2, lambda t: t < cut)
    assert forecasts(r, lambda t: t >= cut) != forecasts(r2, lambda t: t >= cut)


def test_walk_forward_that_starts_too_early_to_train_says_so(long_cascade_dir):
    root, t0 = long_cascade_dir
    with pytest.raises(ValueError, match=r"cannot train the cascade model.*start the range later"):
        _walk_forward_replay(root, t0 + 12 * DAY_MS, t0 + 20 * DAY_MS)


def test_cli_walk_forward_backtests_the_hunter(long_cascade_dir, tmp_path: Path, capsys):
    root, _ = long_cascade_dir
    out = tmp_path / "hunt_wf"
    rc = cli(hunt_args(root, out, 20, "--walk-forward", "--wf-window-days", "10"))
    text = capsys.readouterr().out
    assert rc == 0, text
    s = json.loads((out / "results.json").read_text())
    models = s["walk_forward_models"]
    assert len(models) == 2 and all(m["version"] in text for m in models)
    assert "daily bars closed before it" in text
    assert not any("in-sample" in n for n in s["coverage"]["notes"])
    missing = str(tmp_path / "none")
    assert cli(hunt_args(root, out, 20, "--walk-forward", "--cascade-model", missing)) == 2
