"""The collector process over a real nats-server, fed by a scripted venue client.

The scripted client implements the venue interface (``hean.venues.base.VenueClient``) with
values the test controls, so that divergences, settlements, outages and liquidations happen
on cue; everything after it (polling loops, runtime, NATS, JetStream, HTTP endpoints) is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from service_helpers import Tap, of, running

from hean.bus.nats import NatsBus
from hean.config import free_port
from hean.history import read_funding
from hean_proto.events import (
    BookLevel,
    BookTop,
    FundingRate,
    FundingSpread,
    Liquidation,
    OpenInterest,
    PriceTick,
)
from hean_services.funding_collector.main import Settings, build

H = 3_600_000


@dataclass(frozen=True)
class Market:
    venue: str
    symbol: str
    venue_symbol: str
    native_id: str
    listed_ms: int | None
    contract_size: float = 1.0
    tick_size: float = 0.01
    lot_size: float = 0.001
    min_qty: float = 0.001
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    interval_hours: float | None = 8.0
    active: bool = True


class VenueDown(Exception):
    pass


@dataclass
class ScriptedVenue:
    """A venue client whose answers the test scripts: rates, listings, outages, settlements."""

    venue: str
    rates: dict[str, tuple[float, float]]  # symbol -> (rate, interval_hours)
    listed: dict[str, int | None] = field(default_factory=dict)
    now_ms: int = 1_767_225_600_000
    down: bool = False
    healthy: bool = True
    next_funding: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[FundingRate]] = field(default_factory=dict)
    liquidations: asyncio.Queue = field(default_factory=asyncio.Queue)
    calls: dict[str, int] = field(default_factory=dict)

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.down:
            raise VenueDown(f"{self.venue} {name}: connection refused")

    async def load_markets(self) -> list[Market]:
        self._call("load_markets")
        return [
            Market(
                self.venue,
                s,
                f"{s[:-4]}/USDT:USDT",
                s,
                self.listed.get(s),
                interval_hours=self.rates[s][1],
            )
            for s in self.rates
        ]

    async def fetch_funding_rates(self, symbols: list[str] | None = None) -> list[FundingRate]:
        self._call("fetch_funding_rates")
        out = []
        for s, (rate, interval) in self.rates.items():
            if symbols is not None and s not in symbols:
                continue
            nxt = self.next_funding.setdefault(s, self.now_ms + int(interval * H))
            out.append(
                FundingRate(
                    ts_ms=self.now_ms,
                    venue=self.venue,
                    symbol=s,
                    rate=rate,
                    interval_hours=interval,
                    next_funding_ms=nxt,
                    mark_price=100.0,
                )
            )
        return out

    def settle(self, symbol: str, rate: float) -> int:
        """The venue settles ``symbol`` at its current next funding time and moves on."""
        interval = self.rates[symbol][1]
        t = self.next_funding[symbol]
        self.history.setdefault(symbol, []).append(
            FundingRate(
                ts_ms=t,
                venue=self.venue,
                symbol=symbol,
                rate=rate,
                interval_hours=interval,
                settled=True,
                funding_time_ms=t,
            )
        )
        self.next_funding[symbol] = t + int(interval * H)
        return t

    async def fetch_funding_history(self, symbol, since_ms=None, limit=None):
        self._call("fetch_funding_history")
        return [h for h in self.history.get(symbol, []) if since_ms is None or h.ts_ms >= since_ms]

    async def fetch_open_interest(self, symbol: str) -> OpenInterest:
        self._call("fetch_open_interest")
        return OpenInterest(ts_ms=self.now_ms, venue=self.venue, symbol=symbol, oi_usd=1e6)

    async def fetch_prices(self, symbols=None) -> list[PriceTick]:
        self._call("fetch_prices")
        return [
            PriceTick(ts_ms=self.now_ms, venue=self.venue, symbol=s, mark=100.0) for s in self.rates
        ]

    async def fetch_book_top(self, symbol: str, depth: int = 5) -> BookTop:
        self._call("fetch_book_top")
        return BookTop(
            ts_ms=self.now_ms,
            venue=self.venue,
            symbol=symbol,
            bids=[BookLevel(99.99, 1e6)],
            asks=[BookLevel(100.01, 1e6)],
        )

    async def watch_liquidations(self, symbols=None) -> AsyncIterator[Liquidation]:
        while True:
            yield await self.liquidations.get()

    async def close(self) -> None:
        return None


async def test_collector_end_to_end(nats_url: str) -> None:
    venues = {
        "bybit": ScriptedVenue(
            "bybit", {"BTCUSDT": (0.0001, 8), "ETHUSDT": (0.0001, 8), "SOLUSDT": (0.0002, 4)}
        ),
        "binance": ScriptedVenue(
            "binance", {"BTCUSDT": (0.0001, 8), "ETHUSDT": (0.00005, 4), "DOGEUSDT": (0.00002, 1)}
        ),
        "okx": ScriptedVenue("okx", {"BTCUSDT": (0.0001, 8), "ETHUSDT": (0.0001, 8)}),
    }
    settings = Settings(
        nats_url=nats_url,
        health_port=free_port(),
        venues=list(venues),
        funding_poll_s=0.2,
        price_poll_s=0.3,
        history_max_age_days=30,
        oi_poll_s=0.5,
        book_poll_s=0.3,
        stale_after_s=3.0,
        tick_s=0.2,
    )
    app = build(settings, client_factory=lambda v, s: venues[v])
    tap = Tap()
    await tap.start(nats_url)
    try:
        async with running(app, settings) as ctx:
            base = f"http://127.0.0.1:{settings.health_port}"
            # normalised funding for every symbol of every venue, intervals as quoted
            want = {(v, s) for v, c in venues.items() for s in c.rates}
            await tap.until(lambda ev: want <= {(e.venue, e.symbol) for e in of(FundingRate)(ev)})
            intervals = {(e.venue, e.symbol): e.interval_hours for e in of(FundingRate)(tap.events)}
            assert intervals[("bybit", "SOLUSDT")] == 4
            assert intervals[("binance", "DOGEUSDT")] == 1
            await tap.until(of(PriceTick, venue="okx"))
            await tap.until(of(OpenInterest, venue="binance", symbol="DOGEUSDT"))
            await tap.until(of(BookTop, venue="bybit", symbol="BTCUSDT"))
            assert not of(FundingSpread)(tap.events)  # parity: nothing worth publishing

            # scripted divergence: binance pays 0.3 % per 4 h on BTC
            venues["binance"].rates["BTCUSDT"] = (0.003, 4)
            spreads = await tap.until(
                lambda ev: (
                    len(of(FundingSpread, symbol="BTCUSDT")(ev)) >= 2
                    and of(FundingSpread, symbol="BTCUSDT")(ev)
                )
            )
            pairs = {(s.long_venue, s.short_venue) for s in spreads}
            assert pairs == {("bybit", "binance"), ("okx", "binance")}
            s = spreads[0]
            assert s.spread_bps_per_8h == pytest.approx(60 - 1)
            # taker fees 2 * (5 + 5) bp plus four fills crossing a 2 bp wide book (1 bp each)
            assert s.cost_bps == pytest.approx(24.0)
            assert s.net_bps == pytest.approx(59 * 72 / 8 - 24.0)

            # a liquidation from the stream
            venues["okx"].liquidations.put_nowait(
                Liquidation(
                    ts_ms=1,
                    venue="okx",
                    symbol="BTCUSDT",
                    side="sell",
                    price=99.0,
                    qty=2.0,
                    notional_usd=198.0,
                )
            )
            await tap.until(of(Liquidation, venue="okx"))

            # a settlement is fetched once and stored in JetStream
            t = venues["bybit"].settle("BTCUSDT", 0.00012)
            await tap.until(of(FundingRate, venue="bybit", settled=True))
            bus: NatsBus = ctx.bus
            info = await bus.js.stream_info("HEAN_HISTORY")
            assert info.config.max_age == 30 * 86400  # retention from configuration
            stored = await read_funding(bus.js, venue="bybit", symbol="BTCUSDT")
            assert [(e.funding_time_ms, e.rate) for e in stored] == [(t, 0.00012)]

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/readyz") as r:
                    assert r.status == 200, await r.text()
                async with http.get(f"{base}/metrics") as r:
                    text = await r.text()
                assert (
                    'hean_cross_exchange_funding_spread_bps{long_venue="bybit",'
                    'short_venue="binance",symbol="BTCUSDT"}' in text
                )

                # okx goes dark: its data is marked stale, readiness says so
                venues["okx"].down = True
                marked = await tap.until(of(FundingRate, venue="okx", stale=True))
                assert {e.symbol for e in marked} <= {"BTCUSDT", "ETHUSDT"}

                async def not_ready() -> dict:
                    while True:
                        async with http.get(f"{base}/readyz") as r:
                            body = await r.json()
                            if r.status == 503:
                                return body
                        await asyncio.sleep(0.1)

                body = await asyncio.wait_for(not_ready(), 30)
                assert body["conditions"]["funding_fresh_okx"] is False
                assert body["conditions"]["funding_fresh_bybit"] is True
                async with http.get(f"{base}/metrics") as r:
                    text = await r.text()
                assert 'hean_venue_poll_errors_total{kind="funding",venue="okx"}' in text
                async with http.get(f"{base}/status") as r:
                    state = (await r.json())["state"]
                assert "funding:okx:BTCUSDT" in state["stale"]
    finally:
        await tap.close()
