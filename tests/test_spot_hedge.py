"""The funding harvester hedged with spot, end to end: strategy, risk, router, ledger.

Hand-built events drive the live services (on the in-memory bus, then over a real
nats-server in paper mode): the entry is a perpetual short and a spot long on one venue, the
spot leg filled at the venue's index price with spot fees, funding is received on the
perpetual only, and the exit closes both legs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import time
from contextlib import redirect_stdout

import msgspec
import pytest
from service_helpers import Tap, of, running

from hean.backtest.accounts import accounts
from hean.backtest.costs import CostModel
from hean.backtest.data import PriceSeries, load_history
from hean.backtest.engine import BacktestConfig, run_backtest
from hean.backtest.report import write_outputs
from hean.backtest.stack import LiveStack
from hean.backtest.synthetic import START_MS, write_data_dir
from hean.bus.nats import NatsBus
from hean.cli.main import main as hean_main
from hean.config import free_port
from hean.risk.limits import RiskLimits
from hean.strategies.funding_harvester import FundingHarvester, HarvesterConfig
from hean_proto import codec
from hean_proto.events import (
    BookLevel,
    BookTop,
    Event,
    Fill,
    FundingForecast,
    FundingPayment,
    FundingRate,
    OrderIntent,
    Position,
    PriceTick,
    RiskDecision,
    RiskState,
    Signal,
)
from hean_proto.subjects import msg_id_for, subject_for
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main
from hean_services.strategy_engine import main as engine_main

H = 3_600_000
T0 = 1_767_225_600_000
MARK, INDEX = 100.0, 99.9


def forecast(t: int, action: str = "ENTER", rate: float = 0.0005) -> FundingForecast:
    return FundingForecast(
        ts_ms=t,
        venue="bybit",
        symbol="BTCUSDT",
        interval_hours=8.0,
        current_rate=rate,
        predicted_rate=rate,
        lower_rate=rate - 0.0001,
        upper_rate=rate + 0.0001,
        confidence=0.8,
        action=action,  # type: ignore[arg-type]
        model_version="hand",
        for_funding_ms=t + 8 * H,
    )


def market(t: int, mark: float = MARK, index: float = INDEX) -> list[Event]:
    """The perpetual's book and a price tick whose index is the spot price."""
    return [
        BookTop(
            ts_ms=t,
            venue="bybit",
            symbol="BTCUSDT",
            bids=[BookLevel(mark, 1e6)],
            asks=[BookLevel(mark, 1e6)],
        ),
        PriceTick(ts_ms=t, venue="bybit", symbol="BTCUSDT", mark=mark, index=index),
    ]


def settled(t: int, rate: float) -> FundingRate:
    return FundingRate(
        ts_ms=t,
        venue="bybit",
        symbol="BTCUSDT",
        rate=rate,
        interval_hours=8.0,
        settled=True,
        funding_time_ms=t,
    )


async def test_spot_hedged_harvest_on_hand_built_events() -> None:
    harvester = FundingHarvester(HarvesterConfig(hedge="spot", symbols=["BTCUSDT"]))
    costs = CostModel(slippage_bps=1.0)
    stack = LiveStack([harvester], ["bybit"], RiskLimits(capital_usd=10_000.0), costs, T0)
    await stack.start()

    async def at(t: int, *events: Event) -> None:
        stack.clock.set(t)
        await stack.tick(stack.risk)
        await stack.publish(market(t))
        await stack.publish(list(events))

    await at(T0, forecast(T0))
    record = stack.record
    [entry] = record.intents
    assert [(leg.side, leg.instrument) for leg in entry.legs] == [("sell", "perp"), ("buy", "spot")]
    perp_fill, spot_fill = sorted(record.fills, key=lambda f: f.instrument)
    # 2 % of 10,000 USD per leg: the perp at its mark, the spot at the index, 1 bps slippage
    assert perp_fill.qty == pytest.approx(200.0 / MARK)
    assert perp_fill.price == pytest.approx(MARK * (1 - 1e-4))
    assert perp_fill.fee_usd == pytest.approx(perp_fill.qty * perp_fill.price * 5.5e-4)
    assert spot_fill.instrument == "spot" and spot_fill.side == "buy"
    assert spot_fill.qty == pytest.approx(200.0 / INDEX)
    assert spot_fill.price == pytest.approx(INDEX * (1 + 1e-4))
    assert spot_fill.fee_usd == pytest.approx(spot_fill.qty * spot_fill.price * 10e-4)  # spot fee
    ledger = stack.router.book.ledger
    assert ledger.qty("bybit", "BTCUSDT") == pytest.approx(-perp_fill.qty)
    assert ledger.qty("bybit", "BTCUSDT", "spot") == pytest.approx(spot_fill.qty)

    # a settlement of +4 bps: the short perpetual receives it, the spot holding is not charged
    await at(T0 + 8 * H, settled(T0 + 8 * H, 0.0004))
    [payment] = record.payments
    assert payment.amount_usd == pytest.approx(perp_fill.qty * MARK * 0.0004)
    assert ledger.positions["bybit:BTCUSDT"].funding_usd == pytest.approx(payment.amount_usd)
    assert ledger.positions["bybit:BTCUSDT:spot"].funding_usd == 0.0
    assert harvester.positions.get("bybit:BTCUSDT").info["funding_frac"] == pytest.approx(0.0004)

    # the forecast says EXIT: one reduce-only unit closes the perp and sells the spot held
    await at(T0 + 9 * H, forecast(T0 + 9 * H, action="EXIT"))
    exit_intent = record.intents[-1]
    assert exit_intent.reduce_only
    assert [(leg.side, leg.instrument) for leg in exit_intent.legs] == [
        ("buy", "perp"),
        ("sell", "spot"),
    ]
    exit_fills = [f for f in record.fills if f.intent_id == exit_intent.id]
    assert {(f.instrument, f.side) for f in exit_fills} == {("perp", "buy"), ("spot", "sell")}
    assert not ledger.open_positions()
    assert stack.risk.engine.equity() == pytest.approx(stack.equity(), abs=1e-6)
    assert all(d.approved for d in record.decisions)


async def test_spot_hedge_without_an_index_is_rejected_whole() -> None:
    """A venue whose price ticks carry no index gives no spot price: neither leg is sent."""
    harvester = FundingHarvester(HarvesterConfig(hedge="spot"))
    stack = LiveStack([harvester], ["okx"], RiskLimits(), CostModel(), T0)
    await stack.start()
    stack.clock.set(T0)
    await stack.tick(stack.risk)
    tick = PriceTick(ts_ms=T0, venue="okx", symbol="BTCUSDT", mark=MARK)
    await stack.publish([CostModel().book.book("okx", "BTCUSDT", MARK, T0), tick])
    await stack.publish([msgspec.structs.replace(forecast(T0), venue="okx")])
    [decision] = stack.record.decisions
    assert not decision.approved
    assert decision.reasons == ["okx:BTCUSDT:spot: no spot price (venue index)"]
    assert not stack.record.intents and not stack.record.fills
    assert not harvester.positions  # the strategy dropped the rejected unit


# ------------------------------------------------------------------------- over NATS, paper


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _feed(bus: NatsBus, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for event in market(now_ms()):
            await bus.publish(subject_for(event), codec.encode(event))
        await asyncio.sleep(0.1)


async def _publish(bus: NatsBus, event: Event) -> None:
    await bus.publish(subject_for(event), codec.encode(event), msg_id=msg_id_for(event))


async def test_spot_hedged_harvester_over_nats_through_risk_and_router(
    nats_url: str, tmp_path
) -> None:
    common = {"nats_url": nats_url, "state_dir": str(tmp_path), "heartbeat_s": 5.0}
    es = engine_main.Settings(
        strategies=["funding_harvester"],
        strategy_config={"funding_harvester": {"hedge": "spot", "symbols": ["BTCUSDT"]}},
        health_port=free_port(),
        **common,
    )
    rs = risk_main.Settings(
        health_port=free_port(), risk_token="t", state_publish_s=0.2, persist_s=0.5, **common
    )
    ro = router_main.Settings(
        health_port=free_port(),
        venues=["bybit"],
        risk_max_age_s=1.0,
        leg_fill_timeout_s=1.0,
        stop_grace_s=0.2,
        **common,
    )
    bus = await NatsBus.connect(nats_url, "test-feed")
    await bus.ensure_streams()
    tap = Tap()
    await tap.start(nats_url)
    stop = asyncio.Event()
    feed = asyncio.create_task(_feed(bus, stop))
    try:
        async with (
            running(risk_main.build(rs), rs),
            running(router_main.build(ro), ro),
            running(engine_main.build(es), es),
        ):
            await tap.until(of(RiskState, state="ACTIVE"))
            await tap.until(of(PriceTick, venue="bybit"))
            await asyncio.sleep(1.0)  # risk and the router have heard the state and the market
            await _publish(bus, forecast(now_ms()))
            [enter] = await tap.until(of(Signal, reduce_only=False))
            [decision] = await tap.until(of(RiskDecision, signal_id=enter.id))
            assert decision.approved, decision.reasons
            [intent] = await tap.until(of(OrderIntent, signal_id=enter.id))
            fills = await tap.until(
                lambda ev: len(of(Fill, intent_id=intent.id)(ev)) >= 2 and of(Fill)(ev)
            )
            spot_fill = next(f for f in fills if f.instrument == "spot")
            assert spot_fill.paper and spot_fill.side == "buy"
            assert spot_fill.price == pytest.approx(
                INDEX * 1.0001 * 1.0001
            )  # half spread, slippage
            await tap.until(of(Position, instrument="spot", venue="bybit"))

            t = now_ms()
            await _publish(bus, settled(t, 0.0004))
            [payment] = await tap.until(of(FundingPayment, venue="bybit"))
            perp_fill = next(f for f in fills if f.instrument == "perp")
            assert payment.position_qty == pytest.approx(-perp_fill.qty)
            assert payment.amount_usd > 0  # the short perpetual receives

            await _publish(bus, forecast(now_ms(), action="EXIT"))
            [leave] = await tap.until(of(Signal, reduce_only=True))
            [exit_intent] = await tap.until(of(OrderIntent, signal_id=leave.id))
            await tap.until(
                lambda ev: len(of(Fill, intent_id=exit_intent.id)(ev)) >= 2 and of(Fill)(ev)
            )
            flat = await tap.until(
                lambda ev: [p for p in of(Position, venue="bybit")(ev) if p.ts_ms >= t]
            )
            await asyncio.sleep(0.3)
        last = {p.instrument: p for p in of(Position, venue="bybit")(tap.events)}
        assert last["perp"].qty == pytest.approx(0.0, abs=1e-12)
        assert last["spot"].qty == pytest.approx(0.0, abs=1e-12)
        assert last["spot"].funding_usd == 0.0 and last["perp"].funding_usd > 0
        assert flat and len(of(FundingPayment)(tap.events)) == 1
        out = io.StringIO()
        with redirect_stdout(out):
            code = await asyncio.to_thread(
                hean_main, ["positions", "--all", "--json", "--nats", nats_url]
            )
        assert code == 0
        rows = {row["instrument"]: row for row in json.loads(out.getvalue())}
        assert rows["spot"]["funding_usd"] == 0.0 and rows["spot"]["fees_usd"] > 0
        assert rows["perp"]["funding_usd"] == pytest.approx(last["perp"].funding_usd)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
        await tap.close()
        await bus.close()


# ------------------------------------------------------------------------- backtest


def test_spot_hedged_harvester_backtest_prices_spot_from_the_data(tmp_path) -> None:
    """The backtest runs the spot hedge: spot legs fill at the recorded spot price (here 0.2 %
    under the perpetual), pay spot fees and no funding, and the accounts still add up."""
    data = write_data_dir(tmp_path, days=30)
    history = load_history(data, START_MS, START_MS + 30 * 86_400_000)
    series = history.prices["BTCUSDT"]
    history.prices["BTCUSDT"] = PriceSeries(
        "BTCUSDT", series.times_ms, series.perp, series.perp * 0.998, "basis", True
    )
    cfg = BacktestConfig(
        strategy="funding_harvester",
        strategy_config={"hedge": "spot", "min_confidence": 0.0},
        costs=CostModel(slippage_bps=1.0),
        baseline=False,
    )
    result = run_backtest(history, cfg)
    r = result.replay
    write_outputs(result, tmp_path / "out", plot_png=False)
    with open(tmp_path / "out" / "trades.csv") as fh:
        rows = list(csv.DictReader(fh))
    entry = next(row for row in rows if row["kind"] == "entry")
    assert " BTCUSDT spot @ " in entry["legs"] and entry["legs"].count(" spot @ ") == 1
    spot = [f for f in r.record.fills if f.instrument == "spot"]
    perp = [f for f in r.record.fills if f.instrument == "perp"]
    assert spot and len(spot) == len(perp)
    for f in spot:
        ref = r.stack.spot_refs[(f.venue, f.symbol, f.ts_ms)]
        assert ref == pytest.approx(series.at(f.ts_ms)[0] * 0.998)
        sign = 1 if f.side == "buy" else -1
        assert f.price == pytest.approx(ref * (1 + sign * 1e-4))  # 1 bps of slippage
        assert f.fee_usd == pytest.approx(f.qty * f.price * 10e-4)  # spot taker fee
    assert r.record.payments and all(
        p.position_qty < 0 for p in r.record.payments
    )  # only the short perpetuals are charged or credited
    a = accounts(r, 10_000.0)
    assert r.equity_usd[-1] - 10_000.0 == pytest.approx(a.pnl_usd, abs=1e-9)
    assert a.pnl_usd == pytest.approx(
        a.funding_usd + a.price_pnl_usd - a.fees_usd - a.slippage_usd, abs=1e-9
    )
    # slippage is measured from each leg's own price: 1 bps of every fill's notional
    turnover = sum(f.qty * f.price for f in r.record.fills)
    assert a.slippage_usd == pytest.approx(turnover * 1e-4, rel=1e-3)
    assert not r.stack.router.book.ledger.open_positions()
