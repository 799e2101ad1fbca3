"""OKX's index price in OKX price ticks, which is what prices the spot leg of a hedge on OKX.

OKX's mark-price answer carries no index; the client reads ``/api/v5/market/index-tickers``
once per price poll. Tested here: the normaliser on OKX's documented answer and on bad rows,
the simulator's endpoint in that format, the client against the simulator (directly and
through a loopback server that spoils one row), and risk approving an OKX spot leg priced
from such a tick. The collector publishing the index is in test_collector_sim.py.
"""

from __future__ import annotations

import copy

import msgspec
import pytest
from aiohttp import ClientSession, web
from recorded_venue import DOCUMENTED, OKX_INDEX_ROW
from test_spot_hedge import forecast

from hean.backtest.costs import CostModel
from hean.backtest.stack import LiveStack
from hean.risk.limits import RiskLimits
from hean.sim import SimServer
from hean.sim.scenario import Scenario, SymbolSpec
from hean.strategies.funding_harvester import FundingHarvester, HarvesterConfig
from hean.venues.base import VenueDataError
from hean.venues.ccxt_client import CcxtVenueClient
from hean.venues.okx_index import MAX_LAG_MS, IndexPrice, index_for, parse_index_tickers

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DOC_ROW = OKX_INDEX_ROW
DOC_EXAMPLE = DOCUMENTED[("okx", "/api/v5/market/index-tickers")]


def scenario() -> Scenario:
    return Scenario(
        seed=5,
        start_ms=START,
        symbols=[
            SymbolSpec(base="BTC", price=65_000.0, venues={"okx": 8.0}),
            SymbolSpec(base="SOL", price=150.0, venues={"okx": 8.0}),
        ],
    )


def test_the_documented_answer_normalises() -> None:
    index, bad = parse_index_tickers(DOC_EXAMPLE)
    assert index == {"BTCUSDT": IndexPrice(43350.0, 1_649_419_644_492)}
    assert bad == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"idxPx": "0"}, "idxPx"),
        ({"idxPx": "-43350"}, "idxPx"),
        ({"idxPx": ""}, "idxPx"),
        ({"idxPx": "NaN"}, "idxPx"),
        ({"ts": "1649419644"}, "ts"),  # seconds, not milliseconds
        ({"instId": "BTCUSDT"}, "instId"),
        ({"instId": "BTC-USDT-SWAP"}, "instId"),
    ],
)
def test_a_bad_row_is_refused_by_field_and_the_others_kept(change: dict, field: str) -> None:
    spoiled = {**DOC_ROW, "instId": "ETH-USDT", **change}
    index, bad = parse_index_tickers({"code": "0", "msg": "", "data": [DOC_ROW, spoiled]})
    assert list(index) == ["BTCUSDT"]
    [(exc, row)] = bad
    assert (exc.venue, exc.endpoint, exc.field) == ("okx", "fetch_index_prices", field)
    assert row == spoiled


@pytest.mark.parametrize(
    "body",
    [
        {"code": "50011", "msg": "Rate limit reached", "data": []},
        {"code": "0", "msg": ""},
        [DOC_ROW],
    ],
)
def test_an_answer_that_is_not_index_tickers_raises(body: object) -> None:
    with pytest.raises(VenueDataError):
        parse_index_tickers(body)


def test_an_index_far_older_than_the_mark_is_not_used() -> None:
    index = {"BTCUSDT": IndexPrice(43350.0, START)}
    assert index_for(index, "BTCUSDT", START + MAX_LAG_MS) == 43350.0
    assert index_for(index, "ETHUSDT", START) is None
    with pytest.raises(VenueDataError, match="before the mark"):
        index_for(index, "BTCUSDT", START + MAX_LAG_MS + 1)


async def test_the_simulator_answers_index_tickers_in_okx_format() -> None:
    async with SimServer(scenario()) as sim, ClientSession() as http:
        url = f"{sim.url}/okx/api/v5/market/index-tickers"

        async def get(**query: str) -> dict:
            async with http.get(url, params=query) as r:
                return await r.json()

        every = await get(quoteCcy="USDT")
        assert every["code"] == "0"
        assert {r["instId"] for r in every["data"]} == {"BTC-USDT", "SOL-USDT"}
        assert all(set(r) == set(DOC_ROW) for r in every["data"])
        btc = sim.market.get("okx", "BTCUSDT")
        assert btc is not None
        [one] = (await get(instId="BTC-USDT"))["data"]
        assert float(one["idxPx"]) == pytest.approx(sim.market.index(btc), rel=1e-9)
        assert START <= int(one["ts"]) <= sim.market.now_ms
        assert parse_index_tickers(every)[1] == []  # the client's own reading accepts it
        assert (await get(quoteCcy="USD"))["data"] == []  # USDT swaps only
        assert (await get(instId="DOGE-USDT"))["code"] == "51001"
        assert (await get())["code"] == "50014"


async def test_okx_price_ticks_carry_the_index() -> None:
    async with SimServer(scenario()) as sim:
        c = CcxtVenueClient("okx", base_url=sim.url)
        try:
            sim.advance(3600)
            ticks = {t.symbol: t for t in await c.fetch_prices()}
            for symbol in ("BTCUSDT", "SOLUSDT"):
                s = sim.market.get("okx", symbol)
                assert s is not None
                assert ticks[symbol].index == pytest.approx(sim.market.index(s), rel=1e-9)
                assert ticks[symbol].mark == pytest.approx(sim.market.mark(s), rel=1e-9)
                assert ticks[symbol].mark != ticks[symbol].index  # OKX's basis in the sim
            calls = c.metrics.calls.labels("okx", "fetch_index_prices", "ok")._value.get()
            assert calls == 1  # one request for every symbol
        finally:
            await c.close()


async def test_a_bad_index_is_counted_and_dead_lettered_and_the_mark_still_published() -> None:
    """A loopback server passes the simulator's answers through, with BTC's index spoiled."""

    async with SimServer(scenario()) as sim, ClientSession() as http:

        async def relay(request: web.Request) -> web.Response:
            async with http.get(f"{sim.url}{request.path_qs}") as r:
                body = await r.json()
            if request.path.endswith("/market/index-tickers"):
                body = copy.deepcopy(body)
                for row in body["data"]:
                    if row["instId"] == "BTC-USDT":
                        row["idxPx"] = "-1"
            return web.json_response(body, status=r.status)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", relay)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        c = CcxtVenueClient("okx", base_url=f"http://127.0.0.1:{port}")
        refused: list[tuple[VenueDataError, object]] = []
        c.on_bad_data = lambda exc, item: refused.append((exc, item))
        try:
            ticks = {t.symbol: t for t in await c.fetch_prices()}
        finally:
            await c.close()
            await runner.cleanup()
    assert ticks["BTCUSDT"].index is None and ticks["BTCUSDT"].mark > 0
    assert ticks["SOLUSDT"].index is not None
    [(exc, row)] = refused
    assert exc.field == "idxPx" and isinstance(row, dict) and row["instId"] == "BTC-USDT"
    bad = c.metrics.bad_data.labels("okx", "fetch_index_prices", "idxPx")._value.get()
    assert bad == 1


async def test_an_okx_spot_leg_priced_from_the_fetched_index_is_approved() -> None:
    """The tick the client reads from the simulator, through risk and the paper router."""
    async with SimServer(scenario()) as sim:
        c = CcxtVenueClient("okx", base_url=sim.url)
        try:
            tick = {t.symbol: t for t in await c.fetch_prices()}["BTCUSDT"]
        finally:
            await c.close()
    assert tick.index is not None
    harvester = FundingHarvester(HarvesterConfig(hedge="spot", symbols=["BTCUSDT"]))
    stack = LiveStack([harvester], ["okx"], RiskLimits(), CostModel(), tick.ts_ms)
    await stack.start()
    stack.clock.set(tick.ts_ms)
    await stack.tick(stack.risk)
    book = CostModel().book.book("okx", "BTCUSDT", tick.mark, tick.ts_ms)
    await stack.publish([book, tick])
    enter = msgspec.structs.replace(forecast(tick.ts_ms), venue="okx")  # ENTER, +5 bps
    await stack.publish([enter])
    [decision] = stack.record.decisions
    assert decision.approved, decision.reasons
    [intent] = stack.record.intents
    assert [(leg.venue, leg.side, leg.instrument) for leg in intent.legs] == [
        ("okx", "sell", "perp"),
        ("okx", "buy", "spot"),
    ]
    spot = next(leg for leg in intent.legs if leg.instrument == "spot")
    assert spot.notional_usd / spot.qty == pytest.approx(tick.index)  # sized at the index
