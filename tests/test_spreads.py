"""Spread math checked by hand, staleness, and book slippage."""

from __future__ import annotations

import math

import pytest

from hean.marketdata.spreads import (
    Quote,
    SpreadParams,
    all_spreads,
    annualised,
    fill_cost_bps,
    half_spread_bps,
    net_bps_per_8h,
    per_8h,
    per_hour,
    slippage_bps,
    spread,
)
from hean.marketdata.staleness import StalenessTracker
from hean_proto.events import BookLevel

NOW = 1_767_225_600_000


def q(venue: str, rate: float, interval: float, fee: float = 0.0005, **kw) -> Quote:
    return Quote(venue, "BTCUSDT", rate, interval, fee, NOW, **kw)


def test_normalisation() -> None:
    assert per_hour(0.0008, 8) == pytest.approx(0.0001)
    assert per_8h(0.0001, 4) == pytest.approx(0.0002)
    assert per_8h(0.0001, 1) == pytest.approx(0.0008)
    assert annualised(0.0001, 8) == pytest.approx(0.0001 * 3 * 365)
    with pytest.raises(ValueError):
        per_hour(0.0001, 0)
    with pytest.raises(ValueError):
        per_hour(float("nan"), 8)


def test_4h_vs_8h_pair_hand_checked() -> None:
    # bybit 1 bp per 8 h = 0.125 bp/h; binance 4 bp per 4 h = 1 bp/h -> short binance
    params = SpreadParams(horizon_hours=72, default_slippage_bps=5)
    s = spread(q("bybit", 0.0001, 8, 0.00055), q("binance", 0.0004, 4, 0.0005), params, NOW)
    assert (s.long_venue, s.short_venue) == ("bybit", "binance")
    assert s.spread_bps_per_8h == pytest.approx(7.0)  # (1 - 0.125) bp/h * 8
    assert s.spread_apr_frac == pytest.approx(0.0000875 * 8760)
    assert s.gross_bps == pytest.approx(63.0)  # 0.875 bp/h * 72 h
    # fees: enter and leave both legs = 2 * (5.5 + 5) bp = 21 bp; slippage 4 fills * 5 bp
    assert s.cost_bps == pytest.approx(41.0)
    assert s.net_bps == pytest.approx(22.0)
    assert net_bps_per_8h(s) == pytest.approx(22.0 * 8 / 72)
    assert net_bps_per_8h(s) < 3.0  # below the default threshold once costs are counted
    # the same rates with tight books clear the threshold
    tight = spread(
        q("bybit", 0.0001, 8, 0.00055, buy_cost_bps=0, sell_cost_bps=0),
        q("binance", 0.0004, 4, 0.0005, buy_cost_bps=0, sell_cost_bps=0),
        params,
        NOW,
    )
    assert tight.net_bps == pytest.approx(42.0)
    assert net_bps_per_8h(tight) > 3.0


def test_orientation_does_not_depend_on_argument_order() -> None:
    params = SpreadParams()
    a, b = q("okx", -0.0002, 8), q("bybit", 0.0001, 1)
    s1, s2 = spread(a, b, params, NOW), spread(b, a, params, NOW)
    assert (s1.long_venue, s1.short_venue) == (s2.long_venue, s2.short_venue) == ("okx", "bybit")
    assert s1.spread_bps_per_8h == pytest.approx(s2.spread_bps_per_8h)
    # okx pays shorts 2 bp / 8 h; bybit charges longs 8 bp per 8 h equivalent
    assert s1.spread_bps_per_8h == pytest.approx(2 + 8)


def test_small_spread_is_unprofitable_after_costs() -> None:
    # a 3 bp per 8 h gross spread held 3 days earns 27 bp; 4 taker fills cost more
    s = spread(q("bybit", 0.0001, 8), q("okx", 0.0004, 8), SpreadParams(72, 2), NOW)
    assert s.spread_bps_per_8h == pytest.approx(3.0)
    assert s.gross_bps == pytest.approx(27.0)
    assert s.cost_bps == pytest.approx(20 + 8)
    assert s.net_bps < 0


def test_book_slippage_hand_checked() -> None:
    bids = [BookLevel(99.0, 10.0)]
    asks = [BookLevel(100.0, 1.0), BookLevel(101.0, 1.0)]
    # 150 USD: 100 at 100 (1.0) + 50 at 101 (0.49505) -> VWAP 150 / 1.49505
    vwap = 150 / (1 + 50 / 101)
    assert slippage_bps(asks, 150) == pytest.approx((vwap - 100) / 100 * 1e4)
    assert half_spread_bps(bids, asks) == pytest.approx(1 / 2 / 99.5 * 1e4)
    assert fill_cost_bps(bids, asks, "buy", 50) == pytest.approx(1 / 2 / 99.5 * 1e4)
    assert slippage_bps(asks, 1_000_000) is None  # book too thin: unknown, not zero
    assert slippage_bps([], 10) is None


def test_all_spreads_skips_stale_and_single_venue() -> None:
    quotes = [
        q("bybit", 0.0001, 8),
        q("binance", 0.0002, 8),
        q("okx", 0.0009, 8, stale=True),
        Quote("binance", "ETHUSDT", 0.0001, 8, 0.0005, NOW),
    ]
    spreads = all_spreads(quotes, SpreadParams(), NOW)
    assert [(s.symbol, s.long_venue, s.short_venue) for s in spreads] == [
        ("BTCUSDT", "bybit", "binance")
    ]
    assert all(math.isfinite(s.net_bps) for s in spreads)


def test_staleness_transitions_once() -> None:
    t = StalenessTracker(max_age_ms=1000)
    t.touch("a", 0)
    t.touch("b", 500)
    assert t.newly_stale(900) == []
    assert t.newly_stale(1200) == ["a"]
    assert t.newly_stale(1300) == []  # reported once per episode
    assert t.is_stale("a", 1300) and not t.is_stale("b", 1300)
    assert t.newly_stale(1600) == ["b"]
    assert t.touch("a", 1700) is True  # recovered
    assert not t.is_stale("a", 1800)
    assert t.stale_keys == {"b"}
    assert t.is_stale("never-seen", 0)
