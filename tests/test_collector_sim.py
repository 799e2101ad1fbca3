"""funding-collector and listing-scanner over real ccxt clients, the simulator and NATS.

Nothing is scripted in-process: the services build their venue clients from configuration
(``venue_mode=sim`` and the simulator's URL), exactly as ``hean up`` does.
"""

from __future__ import annotations

from service_helpers import Tap, of, running

from hean.config import load_settings
from hean.sim import ScriptedEvent, SimServer
from hean.sim.scenario import Scenario, SymbolSpec
from hean_proto.events import FundingRate, FundingSpread, Listing, OpenInterest, PriceTick
from hean_services.funding_collector.main import Settings as CollectorSettings
from hean_services.funding_collector.main import build as build_collector
from hean_services.listing_scanner.main import Settings as ScannerSettings
from hean_services.listing_scanner.main import build as build_scanner


def scenario() -> Scenario:
    return Scenario(
        seed=11,
        symbols=[
            SymbolSpec(base="BTC", price=65_000.0),
            SymbolSpec(base="SOL", price=150.0, venues={"binance": 4.0, "bybit": 8.0}),
        ],
    )


async def test_collector_publishes_every_venue_and_a_divergence_spread(nats_url, tmp_path):
    async with SimServer(scenario()) as sim:
        settings = load_settings(
            CollectorSettings,
            "funding-collector",
            env={},
            nats_url=nats_url,
            venue_mode="sim",
            sim_url=sim.url,
            state_dir=str(tmp_path),
            funding_poll_s=0.5,
            price_poll_s=0.5,
            oi_poll_s=1.0,
            book_poll_s=1.0,
            tick_s=0.5,
            heartbeat_s=0.5,
        )
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with running(build_collector(settings), settings):
                for venue in ("binance", "bybit", "okx"):
                    await tap.until(of(FundingRate, venue=venue, symbol="BTCUSDT"), 30)
                sol = await tap.until(of(FundingRate, venue="binance", symbol="SOLUSDT"), 30)
                assert sol[0].interval_hours == 4.0  # never assumed 8 h
                await tap.until(of(PriceTick, venue="okx", symbol="BTCUSDT"), 30)
                await tap.until(of(OpenInterest, venue="bybit", symbol="BTCUSDT"), 30)
                # a scripted divergence: Binance pays 0.3 % per 8 h on BTC, the others do not
                sim.market.inject(
                    ScriptedEvent(
                        at_s=0,
                        kind="divergence",
                        venue="binance",
                        symbol="BTC",
                        rate=0.003,
                        duration_s=3600,
                    )
                )
                spreads = await tap.until(
                    lambda evs: [
                        e
                        for e in of(FundingSpread, symbol="BTCUSDT")(evs)
                        if e.short_venue == "binance" and e.net_bps > 0
                    ],
                    30,
                )
                assert spreads[0].short_rate == 0.003
        finally:
            await tap.close()


async def test_scanner_announces_a_scripted_listing(nats_url, tmp_path):
    sc = Scenario(
        seed=5,
        symbols=[SymbolSpec(base="BTC", price=65_000.0, venues={"bybit": 8.0})],
        events=[
            ScriptedEvent(
                at_s=2, kind="listing", symbol="NEWUSDT", venue="bybit", interval_hours=4, price=0.5
            )
        ],
    )
    async with SimServer(sc) as sim:
        settings = load_settings(
            ScannerSettings,
            "listing-scanner",
            env={},
            nats_url=nats_url,
            venue_mode="sim",
            sim_url=sim.url,
            venues=["bybit"],
            state_dir=str(tmp_path),
            listing_scan_s=0.5,
            listing_watch_period_s=0.5,
            heartbeat_s=0.5,
            alert_delivery=False,
        )
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with running(build_scanner(settings), settings):
                found = await tap.until(of(Listing, venue="bybit", symbol="NEWUSDT"), 30)
                assert found[0].interval_hours == 4
                assert found[0].listed_ms == sim.start_ms + 2000
                assert not of(Listing, symbol="BTCUSDT")(tap.events)  # long listed: no alert
        finally:
            await tap.close()
