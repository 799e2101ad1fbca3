"""funding-collector and listing-scanner over real ccxt clients, the simulator and NATS.

Nothing is scripted in-process: the services build their venue clients from configuration
(``venue_mode=sim`` and the simulator's URL), exactly as ``hean up`` does.
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest
from service_helpers import Tap, of, running
from test_alerts import Receiver, smtp_server  # noqa: F401  (fixture)
from test_listing_service import delivered, settings_for, wait_for

from hean.config import free_port, load_settings
from hean.sim import ScriptedEvent, SimServer
from hean.sim.scenario import Scenario, SymbolSpec
from hean_proto import codec
from hean_proto.events import Alert, FundingRate, FundingSpread, OpenInterest, PriceTick
from hean_proto.subjects import msg_id_for, subject_for
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
            SymbolSpec(base="HYPE", price=35.0, venues={"binance": 4.0, "bybit": 1.0}),
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
            stale_after_s=3.0,
            health_port=free_port(),
        )
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with running(build_collector(settings), settings):
                for venue in ("binance", "bybit", "okx"):
                    await tap.until(of(FundingRate, venue=venue, symbol="BTCUSDT"), 30)
                sol = await tap.until(of(FundingRate, venue="binance", symbol="SOLUSDT"), 30)
                assert sol[0].interval_hours == 4.0  # never assumed 8 h
                hype = await tap.until(of(FundingRate, venue="bybit", symbol="HYPEUSDT"), 30)
                assert hype[0].interval_hours == 1.0
                okx = await tap.until(of(PriceTick, venue="okx", symbol="BTCUSDT"), 30)
                # OKX's index comes from its own endpoint: it prices a spot leg on OKX
                btc = sim.market.get("okx", "BTCUSDT")
                assert btc is not None and okx[0].index is not None
                assert okx[0].index == pytest.approx(sim.market.index(btc), rel=1e-3)
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
                assert spreads[0].long_venue in ("bybit", "okx")
                assert 0 < spreads[0].net_bps < spreads[0].gross_bps  # fees and slippage paid
                # OKX goes down: its last values are re-published marked stale, the venue is
                # marked unhealthy on /metrics and readiness turns false
                sim.market.inject(
                    ScriptedEvent(
                        at_s=0, kind="outage", venue="okx", mode="http_5xx", duration_s=3600
                    )
                )
                await tap.until(of(FundingRate, venue="okx", symbol="BTCUSDT", stale=True), 30)
                base = f"http://127.0.0.1:{settings.health_port}"
                async with aiohttp.ClientSession() as http:

                    async def metrics() -> str:
                        async with http.get(f"{base}/metrics") as r:
                            return await r.text()

                    # unhealthy after three failed calls, each retried with backoff
                    deadline = asyncio.get_running_loop().time() + 60
                    while 'hean_venue_healthy{venue="okx"} 0.0' not in await metrics():
                        assert asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.5)
                    text = await metrics()
                    async with http.get(f"{base}/readyz") as r:
                        ready = await r.json()
                assert (
                    'hean_venue_calls_total{endpoint="fetch_funding_rates",outcome="retried",venue="okx"}'
                    in text
                )
                assert 'hean_venue_healthy{venue="bybit"} 1.0' in text
                assert ready["conditions"]["funding_fresh_okx"] is False
        finally:
            await tap.close()


@pytest.mark.timeout(120)
async def test_listing_and_spike_alert_once_per_channel_across_a_restart(
    nats_url,
    smtp_server,  # noqa: F811
    tmp_path,
):
    box, smtp_port, _ = smtp_server
    cafile = str(tmp_path / "cert.pem")  # written by the smtp_server fixture
    sc = Scenario(
        seed=5,
        symbols=[SymbolSpec(base="BTC", price=65_000.0, venues={"bybit": 8.0, "okx": 8.0})],
        events=[
            ScriptedEvent(
                at_s=2, kind="listing", symbol="NEWUSDT", venue="bybit", interval_hours=4, price=0.5
            ),
            # 0.4 % per 4 h is 0.8 % per 8 h: a spike
            ScriptedEvent(
                at_s=2,
                kind="funding_spike",
                symbol="NEWUSDT",
                venue="bybit",
                rate=0.004,
                duration_s=86_400,
            ),
        ],
    )
    async with SimServer(sc) as sim, Receiver() as rx:

        def scanner_settings() -> ScannerSettings:
            base = settings_for(nats_url, rx, smtp_port, cafile)
            return msgspec.structs.replace(base, venue_mode="sim", sim_url=sim.url)

        spike_key = "funding_spike:bybit:NEWUSDT:"
        settings = scanner_settings()
        async with running(build_scanner(settings), settings):
            await wait_for(
                lambda: all(
                    got["listing:bybit:NEWUSDT"] and any(k.startswith(spike_key) for k in got)
                    for got in delivered(rx, box).values()
                )
            )
        listed = sim.market.get("bybit", "NEWUSDT")
        assert listed is not None and listed.listed_ms == sim.start_ms + 2000
        settings = scanner_settings()
        async with running(build_scanner(settings), settings) as ctx:
            polls = sim.requests["bybit"]
            await wait_for(lambda: sim.requests["bybit"] >= polls + 6)  # it watches again
            sentinel = Alert(
                ts_ms=sim.sim_now_ms(),
                key="sentinel",
                kind="service",
                severity="info",
                title="sentinel",
                text="end of test",
            )
            await ctx.bus.publish(
                subject_for(sentinel), codec.encode(sentinel), msg_id=msg_id_for(sentinel)
            )
            await wait_for(lambda: all(got["sentinel"] for got in delivered(rx, box).values()))
    for channel, got in delivered(rx, box).items():
        assert got["listing:bybit:NEWUSDT"] == 1, channel
        assert sum(n for k, n in got.items() if k.startswith(spike_key)) == 1, channel
        assert not any("BTCUSDT" in k for k in got), channel  # long listed: no alert


async def test_bad_venue_data_is_dead_lettered_not_published(nats_url, tmp_path):
    """A NaN mark price from Binance: no FundingRate for it, a DeadLetter holding the item."""
    from aiohttp import web

    from hean_proto.events import DeadLetter

    async with SimServer(scenario()) as sim:

        async def proxy(request: web.Request) -> web.StreamResponse:
            async with (
                aiohttp.ClientSession() as s,
                s.request(request.method, sim.url + request.path_qs) as r,
            ):
                body = await r.text()
            if request.path.endswith("/fapi/v1/premiumIndex"):
                rows = msgspec.json.decode(body)
                for row in rows:
                    if row["symbol"] == "SOLUSDT":
                        row["markPrice"] = "NaN"
                body = msgspec.json.encode(rows).decode()
            return web.Response(text=body, status=r.status, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        settings = load_settings(
            CollectorSettings,
            "funding-collector",
            env={},
            nats_url=nats_url,
            venue_mode="sim",
            sim_url=f"http://127.0.0.1:{port}",
            venues=["binance"],
            state_dir=str(tmp_path),
            funding_poll_s=0.5,
            collect_liquidations=False,
            heartbeat_s=0.5,
        )
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with running(build_collector(settings), settings):
                await tap.until(of(FundingRate, venue="binance", symbol="BTCUSDT"), 30)
                letters = await tap.until(
                    lambda evs: [
                        e
                        for e in of(DeadLetter, service="funding-collector")(evs)
                        if e.subject == "venue.binance.fetch_funding_rates"
                    ],
                    30,
                )
        finally:
            await tap.close()
            await runner.cleanup()
    assert "markPrice" in letters[0].reason and b"SOL/USDT:USDT" in letters[0].payload
    assert not of(FundingRate, venue="binance", symbol="SOLUSDT")(tap.events)
