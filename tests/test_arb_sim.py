"""Cross-venue funding arbitrage end to end: simulator -> collector -> strategy-engine.

A scripted divergence on the simulator (Binance, 4-hourly, pays 0.3 % per interval on BTC
while Bybit, 8-hourly, pays its usual rate) travels through the real ccxt clients, the
collector's spread computation and the strategy over NATS; the signal is one two-leg signal,
and the end of the divergence closes it.
"""

from __future__ import annotations

import asyncio

from service_helpers import Tap, of, running

from hean.config import free_port, load_settings
from hean.sim import ScriptedEvent, SimServer
from hean.sim.scenario import Scenario, SymbolSpec
from hean_proto.events import FundingRate, FundingSpread, Signal
from hean_services.funding_collector.main import Settings as CollectorSettings
from hean_services.funding_collector.main import build as build_collector
from hean_services.strategy_engine.main import Settings as EngineSettings
from hean_services.strategy_engine.main import build as build_engine


async def test_divergence_opens_one_two_leg_trade_and_convergence_closes_it(nats_url, tmp_path):
    sc = Scenario(
        seed=21,
        symbols=[SymbolSpec(base="BTC", price=65_000.0, venues={"binance": 4.0, "bybit": 8.0})],
    )
    async with SimServer(sc) as sim:
        common = {"nats_url": nats_url, "heartbeat_s": 0.5, "state_dir": str(tmp_path)}
        collector = load_settings(
            CollectorSettings,
            "funding-collector",
            env={},
            venue_mode="sim",
            sim_url=sim.url,
            venues=["binance", "bybit"],
            funding_poll_s=0.5,
            price_poll_s=0.5,
            book_poll_s=1.0,
            tick_s=0.5,
            health_port=free_port(),
            **common,
        )
        engine = load_settings(
            EngineSettings,
            "strategy-engine",
            env={},
            strategies=["cross_venue_arb"],
            strategy_config={"cross_venue_arb": {"symbols": ["BTCUSDT"]}},
            health_port=free_port(),
            **common,
        )
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with (
                running(build_engine(engine), engine),
                running(build_collector(collector), collector),
            ):
                for venue in ("binance", "bybit"):
                    await tap.until(of(FundingRate, venue=venue, symbol="BTCUSDT"), 30)
                await asyncio.sleep(1.5)
                assert not of(Signal)(tap.events)  # the usual spread does not pay the costs
                sim.market.inject(
                    ScriptedEvent(
                        at_s=0,
                        kind="divergence",
                        venue="binance",
                        symbol="BTC",
                        rate=0.003,
                        duration_s=600,
                    )
                )
                spread = await tap.until(of(FundingSpread, symbol="BTCUSDT"), 30)
                assert spread[0].short_venue == "binance" and spread[0].long_venue == "bybit"
                enters = await tap.until(of(Signal, reduce_only=False), 30)
                sim.advance(660)  # the divergence ends: Binance goes back to its usual rate
                exits = await tap.until(of(Signal, reduce_only=True), 30)
                await asyncio.sleep(1.5)  # several more polls: no second entry, no second exit
        finally:
            await tap.close()
    enters = of(Signal, reduce_only=False)(tap.events)
    exits = of(Signal, reduce_only=True)(tap.events)
    assert len(enters) == 1 and len(exits) == 1
    enter, exit_ = enters[0], exits[0]
    # long where funding is paid less (Bybit), short where it is received (Binance)
    assert [(leg.venue, leg.side) for leg in enter.legs] == [("bybit", "buy"), ("binance", "sell")]
    assert [(leg.venue, leg.side) for leg in exit_.legs] == [("bybit", "sell"), ("binance", "buy")]
    assert 0 < enter.size_frac <= 0.02 and enter.stop_loss_frac and enter.confidence >= 0.6
