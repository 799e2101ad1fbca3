"""Property-based: no venue answer crashes a normaliser or slips a bad number through.

Each normaliser of the venue layer sees 10,000 generated items: mutations of a valid ccxt
structure (fields replaced by NaN, infinities, negatives, zero, strings, nulls, lists, huge
values, or removed). Every item either becomes an event whose numbers are finite, whose prices
are positive and whose rate is within the cap, or is refused with VenueDataError naming the
field, and every refusal is counted in ``hean_venue_bad_data_total``.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recorded_venue import OKX_INDEX_ROW
from test_property_decoders import check_clean

from hean.venues.base import MarketInfo, VenueDataError
from hean.venues.ccxt_client import CcxtVenueClient
from hean.venues.okx_index import parse_index_tickers
from hean.venues.validate import Checker
from hean_proto.events import PriceTick

INPUTS = int(os.environ.get("HEAN_PROPERTY_INPUTS", "10000"))
NOW = 1_767_225_600_000
WEIRD: list[Any] = [
    None,
    float("nan"),
    float("inf"),
    -float("inf"),
    "NaN",
    "inf",
    "-1",
    -1,
    0,
    "0",
    "",
    "abc",
    True,
    [],
    {},
    [1, 2],
    1e308,
    -1e308,
    "9" * 40,
    5e-324,
    1,  # seconds where milliseconds belong
    4_000_000_000_000,  # the year 2096
]
MARKET = MarketInfo(
    venue="okx",
    symbol="BTCUSDT",
    venue_symbol="BTC/USDT:USDT",
    native_id="BTC-USDT-SWAP",
    contract_size=0.01,
    interval_hours=8.0,
)
FUNDING = {
    "symbol": "BTC/USDT:USDT",
    "fundingRate": 0.0001,
    "fundingTimestamp": NOW + 3_600_000,
    "markPrice": 65_000.0,
    "indexPrice": 64_990.0,
    "timestamp": NOW,
    "interval": "8h",
    "info": {"maxFundingRate": "0.0075"},
}
MARKET_ITEM = {
    "symbol": "BTC/USDT:USDT",
    "id": "BTC-USDT-SWAP",
    "base": "BTC",
    "quote": "USDT",
    "settle": "USDT",
    "swap": True,
    "linear": True,
    "active": True,
    "contractSize": 0.01,
    "precision": {"price": 0.1, "amount": 0.01},
    "limits": {"amount": {"min": 0.01}},
    "taker": 0.0005,
    "maker": 0.0002,
    "created": NOW - 86_400_000,
    "info": {"listTime": str(NOW - 86_400_000)},
}
LIQUIDATION = {
    "symbol": "BTC/USDT:USDT",
    "price": 64_000.0,
    "contracts": 12.0,
    "baseValue": None,
    "timestamp": NOW,
    "info": {"details": [{"side": "sell"}]},
}


def mutate(doc: dict, rng: random.Random) -> dict:
    d = copy.deepcopy(doc)
    keys = sorted(d)
    kind = rng.randrange(4)
    if kind == 0:
        for k in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            d[k] = rng.choice(WEIRD)
    elif kind == 1:
        for k in rng.sample(keys, rng.randint(1, min(3, len(keys)))):
            d.pop(k)
    elif kind == 2:
        k = rng.choice(keys)
        d[k] = rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-9, 1e12, -1])
    else:
        k = rng.choice(keys)
        if isinstance(d[k], dict) and d[k]:
            inner = rng.choice(sorted(d[k]))
            d[k][inner] = rng.choice(WEIRD)
        else:
            d[k] = rng.choice(WEIRD)
    return d


def bad_count(c: CcxtVenueClient) -> float:
    return sum(
        s.value
        for m in c.metrics.registry.collect()
        if m.name == "hean_venue_bad_data"
        for s in m.samples
        if s.name.endswith("_total")
    )


@pytest.fixture
def okx() -> CcxtVenueClient:
    c = CcxtVenueClient("okx")
    c.markets = {MARKET.symbol: MARKET}
    c.by_ccxt = {MARKET.venue_symbol: MARKET}
    c.clock = lambda: NOW
    return c


def drive(normalise: Callable[[dict], object], doc: dict, counted: Callable[[], float]) -> None:
    seen = {"in": 0, "ok": 0, "refused": 0}
    batch = 250

    @settings(
        max_examples=max(1, INPUTS // batch),
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.integers(min_value=0, max_value=2**63))
    def run(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(batch):
            seen["in"] += 1
            try:
                out = normalise(mutate(doc, rng))
            except VenueDataError as exc:
                assert exc.field and exc.venue == "okx"
                seen["refused"] += 1
                continue
            if out is None:  # a normaliser that counts and drops by itself
                seen["refused"] += 1
                continue
            seen["ok"] += 1
            check_clean(out)  # type: ignore[arg-type]

    run()
    assert seen["in"] >= INPUTS
    assert seen["ok"] > 0 and seen["refused"] > 0
    assert counted() == seen["refused"]


def test_funding_rates(okx: CcxtVenueClient) -> None:
    def normalise(item: dict) -> object:
        try:
            fr = okx._funding(MARKET, item, NOW)
        except VenueDataError as exc:
            okx._bad(exc)
            raise
        assert abs(fr.rate) <= 0.0075 * 1.0001 and math.isfinite(fr.interval_hours)
        return fr

    drive(normalise, FUNDING, lambda: bad_count(okx))


def test_markets(okx: CcxtVenueClient) -> None:
    def normalise(item: dict) -> object:
        try:
            info = okx._market_info(item, {})
        except VenueDataError as exc:
            okx._bad(exc)
            raise
        if info is None:  # not a safe symbol token: skipped, counted as bad data here
            okx._bad(VenueDataError("okx", "load_markets", "base", "not a token"))
            return None
        assert info.contract_size > 0 and (info.listed_ms is None or info.listed_ms > 0)
        for v in (info.tick_size, info.lot_size, info.min_qty):
            assert v is None or (math.isfinite(v) and v > 0)
        return None if info is None else _as_event(info)

    drive(normalise, MARKET_ITEM, lambda: bad_count(okx))


def _as_event(info: MarketInfo):
    from hean_proto.events import Listing

    return Listing(
        ts_ms=NOW,
        venue=info.venue,
        symbol=info.symbol,
        venue_symbol=info.venue_symbol,
        listed_ms=info.listed_ms,
        first_seen_ms=NOW,
        interval_hours=info.interval_hours,
    )


def test_index_tickers(okx: CcxtVenueClient) -> None:
    def normalise(row: dict) -> PriceTick | None:
        index, bad = parse_index_tickers({"code": "0", "msg": "", "data": [row]})
        for exc, item in bad:
            okx._bad(exc, item)
        for symbol, got in index.items():
            return PriceTick(
                ts_ms=got.ts_ms, venue="okx", symbol=symbol, mark=got.price, index=got.price
            )
        return None

    drive(normalise, OKX_INDEX_ROW, lambda: bad_count(okx))


def test_liquidations(okx: CcxtVenueClient) -> None:
    drive(okx._liquidation, LIQUIDATION, lambda: bad_count(okx))


def test_book_levels(okx: CcxtVenueClient) -> None:
    from hean_proto.events import BookTop

    chk = Checker("okx", "fetch_book_top")

    def normalise(doc: dict) -> object:
        level = okx._level(chk, [doc.get("p"), doc.get("q")], MARKET, "bids")
        return BookTop(ts_ms=NOW, venue="okx", symbol="BTCUSDT", bids=[level], asks=[])

    refused: list[int] = []

    def counting(doc: dict) -> object:
        try:
            return normalise(doc)
        except VenueDataError:
            refused.append(1)
            raise

    drive(counting, {"p": "64000.5", "q": "3.2"}, lambda: len(refused))
