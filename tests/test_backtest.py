"""Backtester: the live services replayed on the in-memory bus; accounting to the cent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from hean.backtest import BacktestConfig, BacktestDataError, load_history, replay, run_backtest
from hean.backtest.accounts import Accounts, accounts
from hean.backtest.costs import BookModel, CostModel, parse_slippage_model
from hean.backtest.data import History, PriceSeries
from hean.backtest.engine import Replay
from hean.backtest.synthetic import START_MS, funding_frame, write_data_dir
from hean.cli.main import main as cli
from hean.execution.executor import Executor
from hean.strategies import build
from hean.strategies.base import make_signal
from hean_proto.events import FundingRate, PriceTick, Signal, SignalLeg
from hean_services.order_router.logic import OrderRouterLogic
from hean_services.risk_killswitch.logic import RiskKillswitchLogic
from hean_services.strategy_engine.logic import StrategyEngineLogic

H = 3_600_000
DAY = 86_400_000


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("synth"), days=30, symbols=("BTCUSDT", "ETHUSDT"))


def _identity(r: Replay, capital: float = 10_000.0) -> Accounts:
    a = accounts(r, capital)
    assert r.equity_usd[-1] - capital == pytest.approx(a.pnl_usd, abs=1e-9)
    assert a.pnl_usd == pytest.approx(
        a.funding_usd + a.price_pnl_usd - a.fees_usd - a.slippage_usd, abs=1e-9
    )
    # the router's ledger, its published events and the risk engine agree
    assert a.funding_from_payments == pytest.approx(a.funding_usd, abs=1e-9)
    assert a.fees_from_fills == pytest.approx(a.fees_usd, abs=1e-9)
    assert r.stack.risk.engine.equity() == pytest.approx(r.equity_usd[-1], abs=1e-6)
    assert not r.stack.router.book.ledger.open_positions()  # flattened at the end
    return a


class Scripted:
    """Enters a two-leg unit on the first tick and leaves it at 20 h (after the 16 h funding)."""

    name: ClassVar[str] = "scripted"
    inputs: ClassVar[tuple[type, ...]] = (PriceTick,)

    def __init__(self, exit_size_frac: float = 1.0) -> None:
        self.exit_size_frac = exit_size_frac
        self.sent: set[str] = set()

    def on_event(self, event: PriceTick, now_ms: int) -> list[Signal]:
        kind = "enter" if now_ms == START_MS else "exit" if now_ms == START_MS + 20 * H else ""
        if not kind or kind in self.sent:
            return []
        self.sent.add(kind)
        legs = [
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy" if kind == "enter" else "sell"),
            SignalLeg(venue="binance", symbol="BTCUSDT", side="sell" if kind == "enter" else "buy"),
        ]
        return [
            make_signal(
                strategy=self.name,
                symbol="BTCUSDT",
                kind=kind,
                now_ms=now_ms,
                legs=legs,
                size_frac=0.02 if kind == "enter" else self.exit_size_frac,
                confidence=1.0,
                reason=kind,
                stop_loss_frac=0.05,
                reduce_only=kind == "exit",
            )
        ]


def _hand_history() -> History:
    times = np.asarray([START_MS + h * H for h in (0, 4, 8, 12, 16, 20)], dtype="int64")
    px = np.asarray([100.0, 101.0, 102.0, 103.0, 104.0, 104.0])
    funding = []
    for h in (4, 8, 12, 16):
        t = START_MS + h * H
        funding.append(_rate("binance", t, 0.0003, 4.0))
        if h % 8 == 0:
            funding.append(_rate("bybit", t, 0.0001, 8.0))
    return History(
        funding=sorted(funding, key=lambda e: (e.ts_ms, e.venue)),
        warmup=[],
        prices={"BTCUSDT": PriceSeries("BTCUSDT", times, px, px.copy(), "hand", True)},
        start_ms=START_MS,
        end_ms=START_MS + 21 * H,
    )


def _rate(venue: str, t: int, rate: float, interval: float) -> FundingRate:
    return FundingRate(
        ts_ms=t,
        venue=venue,
        symbol="BTCUSDT",
        rate=rate,
        interval_hours=interval,
        settled=True,
        funding_time_ms=t,
    )


def test_two_leg_trade_to_the_cent():
    """Long bybit (8 h), short binance (4 h), 2 % of 10,000 USD each leg, held 20 h.

    Filled by the router's paper venues at 1 bps of slippage: the slippage is in the fill
    price, and the fee is charged on the slipped price (fee x (1 +- 1 bps), a 0.00000004 USD
    difference from charging it on the recorded price). The exit signal asks for the whole
    position (size 100 %): risk caps a reduce-only leg at the held quantity.
    """
    cfg = BacktestConfig(strategy="scripted", costs=CostModel(slippage_bps=1.0), baseline=False)
    r = replay(_hand_history(), Scripted(), cfg)
    fills = r.record.fills
    assert [(f.venue, f.side, f.qty) for f in fills] == [
        ("bybit", "buy", pytest.approx(2.0)),
        ("binance", "sell", pytest.approx(2.0)),
        ("bybit", "sell", pytest.approx(2.0)),
        ("binance", "buy", pytest.approx(2.0)),
    ]
    assert [f.price for f in fills] == pytest.approx([100.01, 99.99, 103.9896, 104.0104])
    a = _identity(r)
    # short 2 BTC on binance receives 2 x px x 3 bps at 101..104 (every 4 h); long 2 BTC on
    # bybit pays 2 x px x 1 bps at 102 and 104 (every 8 h)
    assert [(p.venue, round(p.amount_usd, 4)) for p in r.record.payments] == [
        ("binance", 0.0606),
        ("binance", 0.0612),
        ("bybit", -0.0204),
        ("binance", 0.0618),
        ("binance", 0.0624),
        ("bybit", -0.0208),
    ]
    assert a.funding_usd == pytest.approx(0.246 - 0.0412)
    # fees: 2 x 100.01 x 5.5 bps + 2 x 99.99 x 5 bps + 2 x 103.9896 x 5.5 bps
    #       + 2 x 104.0104 x 5 bps
    assert a.fees_usd == pytest.approx(0.110011 + 0.09999 + 0.11438856 + 0.1040104)
    assert a.slippage_usd == pytest.approx(0.04 + 0.0416)
    assert a.price_pnl_usd == pytest.approx(0.0, abs=1e-9)  # both legs moved together
    assert round(a.funding_usd, 2) == 0.20 and round(a.fees_usd, 2) == 0.43
    # by hand: 10,000 + 0.2048 - 0.42839996 - 0.0816
    assert r.equity_usd[-1] == pytest.approx(9999.69480004)
    assert round(r.equity_usd[-1], 2) == 9999.69
    assert a.trades == 1 and [row.kind for row in a.rows] == ["entry", "exit"]


def test_an_exit_after_a_rise_closes_what_the_entry_bought():
    """Live risk counts an exit's units at the entry price: after the price rose from 100 to
    104, a 2 % exit closes all 2 BTC the entry bought, and nothing is left to flatten."""
    cfg = BacktestConfig(strategy="scripted", costs=CostModel(slippage_bps=1.0), baseline=False)
    r = replay(_hand_history(), Scripted(exit_size_frac=0.02), cfg)
    entry_qty = [f.qty for f in r.record.fills if f.intent_id == r.record.intents[0].id]
    exit_qty = [f.qty for f in r.record.fills if f.intent_id == r.record.intents[1].id]
    assert sum(exit_qty) == pytest.approx(sum(entry_qty)) and sum(entry_qty) > 0
    a = _identity(r)
    assert [row.kind for row in a.rows] == ["entry", "exit"]


def test_the_replay_drives_the_live_services_on_the_bus(synth_dir: Path):
    history = load_history(synth_dir, START_MS, START_MS + 30 * DAY)
    assert {e.venue: e.interval_hours for e in history.funding} == {"bybit": 8.0, "binance": 4.0}
    cfg = BacktestConfig(strategy="cross_venue_arb")
    result = run_backtest(history, cfg)
    r = result.replay
    stack = r.stack
    assert isinstance(stack.engine, StrategyEngineLogic)
    assert isinstance(stack.risk, RiskKillswitchLogic)
    assert isinstance(stack.router, OrderRouterLogic)
    assert isinstance(stack.executor, Executor)
    subjects = {
        m.subject.split(".")[1] + "." + m.subject.split(".")[2] for m in stack.bus.published
    }
    assert {"signal.cross_venue_arb", "risk.decision", "order.approved", "fill.bybit"} <= subjects
    assert all(d.signal_id in {s.id for s in r.signals} for d in r.record.decisions)
    a = _identity(r)
    assert a.trades >= 1 and a.funding_usd > 0 and a.fees_usd > 0
    assert "confidence N < N" in a.rejections  # live risk's confidence floor applies
    assert result.baseline is not None
    _identity(result.baseline)
    again = run_backtest(load_history(synth_dir, START_MS, START_MS + 30 * DAY), cfg)
    assert [s.id for s in again.replay.signals] == [s.id for s in r.signals]
    assert again.replay.equity_usd == r.equity_usd


def test_a_leg_filling_alone_is_unwound_by_the_router_and_charged(synth_dir: Path):
    history = load_history(synth_dir, START_MS, START_MS + 30 * DAY)
    costs = CostModel(leg_failure_prob=0.5, seed=1)
    cfg = BacktestConfig(strategy="cross_venue_arb", costs=costs, baseline=False)
    r = replay(history, build("cross_venue_arb"), cfg)
    a = _identity(r)
    assert a.leg_failures > 0 and a.unwinds > 0 and a.unwind_cost_usd > 0
    for row in a.rows:
        if row.unwound:  # the lone leg and its unwind net to nothing
            net: dict[str, float] = {}
            for f in row.fills:
                net[f.venue] = net.get(f.venue, 0.0) + (f.qty if f.side == "buy" else -f.qty)
            assert all(abs(q) < 1e-9 for q in net.values())
            assert row.unwind_cost_usd == pytest.approx(row.fees_usd + row.slippage_usd)
    again = replay(history, build("cross_venue_arb"), cfg)
    assert again.equity_usd == r.equity_usd


def test_a_late_leg_fills_at_the_price_moved_by_trailing_volatility():
    """The second leg of the entry fills 60 s after the first, at the recorded price moved by a
    seeded draw scaled by the trailing volatility of the bars before it (by hand below); the
    first leg and the reduce-only exit are not delayed, and the move is reported as price, not
    slippage."""
    h = _hand_history()
    s = h.prices["BTCUSDT"]
    before = np.asarray([START_MS - k * H for k in (16, 12, 8, 4)], dtype="int64")
    times = np.concatenate([before, s.times_ms])
    px = np.concatenate([[96.0, 97.0, 98.0, 99.0], s.perp])
    h.prices["BTCUSDT"] = PriceSeries("BTCUSDT", times, px, px.copy(), "hand", True)
    rets = np.log([97 / 96, 98 / 97, 99 / 98, 100 / 99])
    vol = float(np.sqrt(np.sum(rets**2) / (16 * H)))
    assert h.prices["BTCUSDT"].vol_per_sqrt_ms(START_MS) == pytest.approx(vol)
    costs = CostModel(slippage_bps=1.0, leg_latency_ms=60_000, seed=3)
    cfg = BacktestConfig(strategy="scripted", costs=costs, baseline=False)
    r = replay(h, Scripted(), cfg)
    entry = [f for f in r.record.fills if f.intent_id == r.record.intents[0].id]
    first, late = entry
    move = costs.late_leg_move(late.client_order_id, vol)
    assert move != 0.0 and costs.late_leg_move(first.client_order_id, vol) == 0.0
    assert first.price == pytest.approx(100.01)  # bybit buy, on time
    assert late.price == pytest.approx(100.0 * np.exp(move) * (1 - 1e-4))  # binance sell, late
    exits = [f.price for f in r.record.fills if f.intent_id == r.record.intents[1].id]
    assert exits == pytest.approx([103.9896, 104.0104])
    a = _identity(r)
    assert a.late_legs == 1
    assert a.late_leg_move_usd == pytest.approx(2.0 * 100.0 * (1 - np.exp(move)))
    assert a.slippage_usd == pytest.approx(0.02 + 2.0 * 100.0 * np.exp(move) * 1e-4 + 0.0416)
    again = replay(h, Scripted(), cfg)
    assert again.equity_usd == r.equity_usd


def test_late_leg_draws_are_standard_normal_and_scale_with_the_root_of_the_delay():
    ids = [f"H{i:027d}L01" for i in range(4000)]
    z = np.asarray([CostModel(leg_latency_ms=1.0).late_leg_move(c, 1.0) for c in ids])
    assert abs(z.mean()) < 0.06 and 0.95 < z.std() < 1.05
    slow = CostModel(leg_latency_ms=4.0).late_leg_move(ids[0], 1.0)
    assert slow == pytest.approx(2.0 * z[0])
    assert CostModel(leg_latency_ms=1.0).late_leg_move("H" + "0" * 27 + "L00", 1.0) == 0.0
    assert CostModel(leg_latency_ms=1.0).late_leg_move("U" + "0" * 31, 1.0) == 0.0
    with pytest.raises(ValueError, match="leg latency"):
        CostModel(leg_latency_ms=-1.0)


def test_book_model_walks_levels():
    assert parse_slippage_model("bps:3") == (3.0, BookModel())
    slip, book = parse_slippage_model("book:1:1000:2:3")
    assert slip == 0.0 and book == BookModel(1.0, 1000.0, 2.0, 3)
    top = book.book("bybit", "BTCUSDT", 100.0, 0)
    assert [lv.price for lv in top.asks] == pytest.approx([100.01, 100.03, 100.05])
    assert top.asks[0].size == pytest.approx(10.0)
    with pytest.raises(ValueError, match="slippage-model"):
        parse_slippage_model("book:x")
    cfg = BacktestConfig(
        strategy="scripted", costs=CostModel(slippage_bps=0.0, book=book), baseline=False
    )
    r = replay(_hand_history(), Scripted(), cfg)
    # 2 BTC at 100: 200 USD fits the first 1,000 USD level, 1 bps from the recorded price
    assert r.record.fills[0].price == pytest.approx(100.01)
    assert accounts(r, 10_000).slippage_usd == pytest.approx(4 * 2 * 0.0001 * 100, rel=0.05)


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


def test_walk_forward_trains_each_window_only_on_its_past(synth_dir: Path):
    from hean.backtest.walkforward import WalkForward
    from hean.ml.funding.train import TrainConfig

    start, end = START_MS + 15 * DAY, START_MS + 30 * DAY
    history = load_history(synth_dir, start, end, keep_frame=True)
    assert history.frame is not None
    tiny = TrainConfig(epochs=1, max_train=300, hidden=8, seq_len=8, batch_size=128)
    wf = WalkForward(history.frame, start, window_days=5, train=tiny)
    cfg = BacktestConfig(strategy="funding_harvester", baseline=False, walk_forward=wf)
    r = replay(history, build("funding_harvester"), cfg)
    models = r.models
    assert [m["from_ms"] for m in models] == [start, start + 5 * DAY, start + 10 * DAY]
    times = pd.to_datetime(history.frame["funding_time_utc"], utc=True)
    for m in models:
        boundary = pd.Timestamp(m["from_ms"], unit="ms", tz="UTC")
        assert m["trained_on_rows"] == int((times < boundary).sum())
        assert pd.Timestamp(m["last_row_utc"]) < boundary
    assert len({m["version"] for m in models}) == 3
    assert r.record.forecasts
    for f in r.record.forecasts:  # each forecast came from the model of its window
        window = max(i for i, m in enumerate(models) if m["from_ms"] <= f.ts_ms)
        assert f.model_version == models[window]["version"]
    _identity(r)


def test_missing_data_and_empty_range_are_clear(tmp_path: Path, synth_dir: Path):
    with pytest.raises(BacktestDataError, match="not found"):
        load_history(tmp_path / "nope", START_MS, START_MS + DAY)
    with pytest.raises(BacktestDataError, match="HEAN_DATA_DIR"):
        load_history(None, START_MS, START_MS + DAY)
    with pytest.raises(BacktestDataError, match="no funding settlements"):
        load_history(synth_dir, START_MS - 400 * DAY, START_MS - 300 * DAY)
    with pytest.raises(BacktestDataError, match="empty range"):
        load_history(synth_dir, START_MS, START_MS)
    assert cli(["backtest", "--strategy", "cross_venue_arb", "--data", str(tmp_path)]) == 2
    args = ["backtest", "--strategy", "cross_venue_arb", "--data", str(synth_dir)]
    assert cli([*args, "--risk", '{"no_such_limit": 1}']) == 2


def test_cli_writes_its_outputs(synth_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    args = ["backtest", "--strategy", "cross_venue_arb", "--days", "20", "--data", str(synth_dir)]
    assert cli([*args, "--out", str(out), "--slippage-model", "book:1:50000"]) == 0
    text = capsys.readouterr().out
    assert "funding" in text and "buy and hold" in text and "binance:BTCUSDT" in text
    assert "10 levels of 50,000 USD" in text
    s = json.loads((out / "results.json").read_text())
    r = s["result"]
    assert r["pnl_usd"] == pytest.approx(
        r["funding_usd"] + r["price_pnl_usd"] - r["fees_usd"] - r["slippage_usd"], abs=1e-5
    )
    assert s["risk_limits"]["max_trade_frac"] == 0.02
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64" in (out / "report.html").read_text()
    rows = (out / "trades.csv").read_text().splitlines()
    entries = [line for line in rows[1:] if ",entry," in line]
    assert sum(1 for line in entries if ",False," in line) == r["trades"]


def test_backtest_from_the_history_store(nats_url: str, synth_dir: Path, tmp_path: Path):
    """A slice imported into JetStream backtests exactly like the same slice read from files."""
    from hean.bus.nats import NatsBus
    from hean.history.store import events_from_frame, import_events

    frame = funding_frame(30, ("BTCUSDT", "ETHUSDT"), 7)
    events, errors = events_from_frame(frame[frame["symbol"] == "BTCUSDT"])
    assert not errors

    async def load() -> None:
        bus = await NatsBus.connect(nats_url, "test-import")
        try:
            await bus.ensure_streams()
            await import_events(bus.js, events)
        finally:
            await bus.close()

    asyncio.run(load())
    common = ["backtest", "--strategy", "cross_venue_arb", "--days", "20", "--no-plot"]
    common += ["--symbols", "BTCUSDT", "--no-baseline"]
    assert cli([*common, "--data", str(synth_dir), "--out", str(tmp_path / "files")]) == 0
    store = ["--from-store", nats_url, "--data", str(synth_dir), "--out", str(tmp_path / "store")]
    assert cli([*common, *store]) == 0
    a = json.loads((tmp_path / "files" / "results.json").read_text())
    b = json.loads((tmp_path / "store" / "results.json").read_text())
    assert a["range"] == b["range"] and a["result"] == b["result"]
    assert list(b["coverage"]["funding_series"]) == ["binance:BTCUSDT", "bybit:BTCUSDT"]
    late = ["--from", "2030-01-01", "--to", "2030-02-01"]
    assert cli([*common, *store, *late]) == 2


@pytest.mark.data
def test_real_history_both_strategies(data_dir: Path, tmp_path: Path):
    from hean.backtest.data import data_end_ms

    end = data_end_ms(data_dir) + 1
    history = load_history(data_dir, end - 14 * DAY, end, symbols=["BTCUSDT", "HYPEUSDT"])
    venues = {(e.venue, e.symbol): e.interval_hours for e in history.funding}
    assert venues[("binance", "HYPEUSDT")] == 4.0 and venues[("bybit", "HYPEUSDT")] == 8.0
    perp_hedge = {"hedge": "perp", "hedge_venue": "bybit", "venues": ["binance"]}
    for name, conf in (("funding_harvester", perp_hedge), ("cross_venue_arb", None)):
        result = run_backtest(history, BacktestConfig(strategy=name, strategy_config=conf))
        _identity(result.replay)
        assert result.replay.events > len(history.funding)
    out = tmp_path / "real"
    args = ["backtest", "--strategy", "funding_harvester", "--days", "7", "--data", str(data_dir)]
    assert cli([*args, "--symbols", "BTCUSDT", "--out", str(out), "--no-plot"]) == 0
    assert json.loads((out / "results.json").read_text())["model_version"]


def test_replay_benchmark_reports_events_per_second():
    from hean.backtest.bench import replay_throughput

    r = replay_throughput(days=10, symbols=1)
    assert r["events"] > r["settlements"] > 0 and r["events_per_s"] > 0
