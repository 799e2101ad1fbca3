"""Backtester: accounting identities, a hand-computed two-leg trade, no look-ahead, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hean.backtest import BacktestConfig, BacktestDataError, load_history, replay, run_backtest
from hean.backtest.data import History, PriceSeries
from hean.backtest.portfolio import CostModel, Limits, Portfolio
from hean.backtest.synthetic import START_MS, write_data_dir
from hean.cli.main import main as cli
from hean.strategies import build
from hean_proto.events import FundingRate, Signal, SignalLeg

H = 3_600_000
DAY = 86_400_000


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("synth"), days=30, symbols=("BTCUSDT", "ETHUSDT"))


def _identity(p: Portfolio) -> None:
    pnl = p.equity() - p.capital
    assert pnl == pytest.approx(
        p.funding_usd + p.price_pnl_usd() - p.fees_usd - p.slippage_usd, abs=1e-9
    )
    trades = p.closed + p.open
    assert sum(t.funding_usd for t in trades) == pytest.approx(p.funding_usd, abs=1e-9)
    assert sum(t.fees_usd for t in trades) == pytest.approx(p.fees_usd, abs=1e-9)


def test_two_leg_trade_to_the_cent():
    """Long bybit (8 h), short binance (4 h), 2 % of 10,000 USD each leg, held 16 h."""
    costs = CostModel(slippage_bps=1.0)  # bybit taker 5.5 bps, binance 5 bps
    p = Portfolio(10_000.0, costs, Limits())
    p.set_price("BTCUSDT", 100.0, 100.0)
    legs = [
        SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy"),
        SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
    ]
    sig = Signal(
        ts_ms=0, id="a", strategy="t", symbol="BTCUSDT", legs=legs, size_frac=0.02, confidence=1
    )
    assert p.execute(sig, 0) is None
    # entry: 200 USD per leg; fees 0.11 + 0.10, slippage 0.02 + 0.02
    assert p.fees_usd == pytest.approx(0.21) and p.slippage_usd == pytest.approx(0.04)
    # binance settles at 4 h, 8 h, 12 h, 16 h at 3 bps; bybit at 8 h and 16 h at 1 bps
    for t in (4, 8, 12, 16):
        p.set_price("BTCUSDT", 100.0 + t / 4, 100.0)
        p.settle_funding("binance", "BTCUSDT", 0.0003)
        if t % 8 == 0:
            p.settle_funding("bybit", "BTCUSDT", 0.0001)
    # short 2 BTC receives 2 * px * 3 bps at px 101..104; long 2 BTC pays 2 * px * 1 bps at 102, 104
    received = sum(2 * px * 0.0003 for px in (101, 102, 103, 104))
    paid = sum(2 * px * 0.0001 for px in (102, 104))
    assert p.funding_usd == pytest.approx(received - paid)
    assert round(p.funding_usd, 2) == 0.20
    exit_ = Signal(
        ts_ms=16 * H,
        id="b",
        strategy="t",
        symbol="BTCUSDT",
        legs=[
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="sell"),
            SignalLeg(venue="binance", symbol="BTCUSDT", side="buy"),
        ],
        size_frac=0.02,
        confidence=1,
        reduce_only=True,
    )
    assert p.execute(exit_, 16 * H) is None
    # exit at 104 on 208 USD per leg; both legs' price PnL cancel
    assert p.price_pnl_usd() == pytest.approx(0.0)
    assert p.fees_usd == pytest.approx(0.21 + 208 * 0.00055 + 208 * 0.0005)
    assert p.slippage_usd == pytest.approx(0.04 + 2 * 208 * 0.0001)
    assert round(p.equity() - 10_000, 2) == round(p.funding_usd - p.fees_usd - p.slippage_usd, 2)
    # by hand: funding 0.246 - 0.0412 = 0.2048; fees 0.21 + 0.1144 + 0.104 = 0.4284;
    # slippage 0.04 + 0.0416 = 0.0816; equity 10,000 + 0.2048 - 0.4284 - 0.0816
    assert p.funding_usd == pytest.approx(0.2048)
    assert p.equity() == pytest.approx(9999.6948)
    _identity(p)


def test_limits_fail_closed():
    p = Portfolio(1000.0, CostModel(), Limits(max_size_frac=0.02, max_gross_frac=0.05))
    leg = SignalLeg(venue="bybit", symbol="X", side="buy")
    big = Signal(ts_ms=0, id="a", strategy="t", symbol="X", legs=[leg], size_frac=0.5, confidence=1)
    assert p.execute(big, 0) == "size_above_cap"
    ok = Signal(ts_ms=0, id="b", strategy="t", symbol="X", legs=[leg], size_frac=0.02, confidence=1)
    assert p.execute(ok, 0) == "price_unknown"
    p.set_price("X", 10.0, 10.0)
    assert p.execute(ok, 0) is None
    assert p.execute(ok, 0) is None
    assert p.execute(ok, 0) == "gross_exposure"


def test_synthetic_arb_backtest_identities_and_determinism(synth_dir: Path):
    history = load_history(synth_dir, START_MS, START_MS + 30 * DAY)
    intervals = {e.venue: e.interval_hours for e in history.funding}
    assert intervals == {"bybit": 8.0, "binance": 4.0}
    cfg = BacktestConfig(strategy="cross_venue_arb")
    result = run_backtest(history, cfg)
    p = result.replay.portfolio
    assert p.closed and p.funding_usd > 0 and p.fees_usd > 0
    _identity(p)
    assert result.baseline is not None
    _identity(result.baseline.portfolio)
    again = run_backtest(load_history(synth_dir, START_MS, START_MS + 30 * DAY), cfg)
    assert [s.id for s in again.replay.signals] == [s.id for s in result.replay.signals]
    assert again.replay.equity_usd == result.replay.equity_usd


def test_no_look_ahead(synth_dir: Path):
    """Changing everything after day 15 changes nothing the replay did before day 15."""
    cut = START_MS + 15 * DAY
    full = load_history(synth_dir, START_MS, START_MS + 30 * DAY)
    shifted = History(
        funding=[
            e if e.ts_ms < cut else FundingRate(**{**_fields(e), "rate": -e.rate})
            for e in full.funding
        ],
        warmup=full.warmup,
        prices={
            k: PriceSeries(
                v.symbol,
                v.times_ms,
                v.perp * ((v.times_ms < cut) + (v.times_ms >= cut) * 1.5),
                v.spot * ((v.times_ms < cut) + (v.times_ms >= cut) * 1.5),
                v.source,
                v.spot_is_real,
            )
            for k, v in full.prices.items()
        },
        start_ms=full.start_ms,
        end_ms=full.end_ms,
    )
    cfg = BacktestConfig(strategy="cross_venue_arb", baseline=False)
    a = replay(full, build("cross_venue_arb"), cfg)
    b = replay(shifted, build("cross_venue_arb"), cfg)
    before = [i for i, t in enumerate(a.equity_ms) if t < cut]
    assert before and [a.equity_usd[i] for i in before] == [b.equity_usd[i] for i in before]
    assert [s.id for s in a.signals if s.ts_ms < cut] == [s.id for s in b.signals if s.ts_ms < cut]
    assert a.equity_usd[-1] != b.equity_usd[-1]


def _fields(e):
    return {f: getattr(e, f) for f in e.__struct_fields__}


def test_missing_data_and_empty_range_are_clear(tmp_path: Path, synth_dir: Path):
    with pytest.raises(BacktestDataError, match="not found"):
        load_history(tmp_path / "nope", START_MS, START_MS + DAY)
    with pytest.raises(BacktestDataError, match="HEAN_DATA_DIR"):
        load_history(None, START_MS, START_MS + DAY)
    with pytest.raises(BacktestDataError, match="no funding settlements"):
        load_history(synth_dir, START_MS - 400 * DAY, START_MS - 300 * DAY)
    assert cli(["backtest", "--strategy", "cross_venue_arb", "--data", str(tmp_path)]) == 2


def test_cli_writes_its_outputs(synth_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    args = ["backtest", "--strategy", "cross_venue_arb", "--days", "20", "--data", str(synth_dir)]
    assert cli([*args, "--out", str(out), "--slippage-model", "bps:3"]) == 0
    text = capsys.readouterr().out
    assert "funding" in text and "buy and hold" in text and "binance:BTCUSDT" in text
    s = json.loads((out / "results.json").read_text())
    r = s["result"]
    assert r["pnl_usd"] == pytest.approx(
        r["funding_usd"] + r["price_pnl_usd"] - r["fees_usd"] - r["slippage_usd"], abs=1e-5
    )
    assert s["costs"]["slippage_bps_override"] == 3.0
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert (out / "trades.csv").read_text().count("\n") == r["trades"] + 1


@pytest.mark.data
def test_real_history_both_strategies(data_dir: Path, tmp_path: Path):
    from hean.backtest.data import data_end_ms

    end = data_end_ms(data_dir) + 1
    history = load_history(data_dir, end - 14 * DAY, end, symbols=["BTCUSDT", "HYPEUSDT"])
    venues = {(e.venue, e.symbol): e.interval_hours for e in history.funding}
    assert venues[("binance", "HYPEUSDT")] == 4.0 and venues[("bybit", "HYPEUSDT")] == 8.0
    for name in ("funding_harvester", "cross_venue_arb"):
        result = run_backtest(history, BacktestConfig(strategy=name))
        _identity(result.replay.portfolio)
        assert result.replay.events > len(history.funding)
    assert (
        cli(
            [
                "backtest",
                "--strategy",
                "funding_harvester",
                "--days",
                "7",
                "--data",
                str(data_dir),
                "--symbols",
                "BTCUSDT",
                "--out",
                str(tmp_path / "real"),
                "--no-plot",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "real" / "results.json").read_text())["model_version"]


def test_replay_benchmark_reports_events_per_second():
    from hean.backtest.bench import replay_throughput

    r = replay_throughput(days=10, symbols=1)
    assert r["events"] > r["settlements"] > 0 and r["events_per_s"] > 0
