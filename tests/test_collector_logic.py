"""Collector logic driven directly: validation, snapshots, settlements, staleness, spreads."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hean_proto.events import (
    Alert,
    BookLevel,
    BookTop,
    DeadLetter,
    FundingRate,
    FundingSpread,
    PriceTick,
)
from hean_services.funding_collector.logic import CollectorConfig, FundingCollectorLogic

NOW = 1_767_225_600_000
H = 3_600_000


@dataclass(frozen=True)
class Market:
    venue: str
    symbol: str
    taker_fee: float = 0.0005
    interval_hours: float | None = 8.0
    venue_symbol: str = ""
    listed_ms: int | None = None
    active: bool = True


def fr(venue: str, symbol: str, rate: float, interval: float, *, ts: int = NOW, nxt=None):
    return FundingRate(
        ts_ms=ts,
        venue=venue,
        symbol=symbol,
        rate=rate,
        interval_hours=interval,
        next_funding_ms=nxt,
    )


def logic(**cfg) -> FundingCollectorLogic:
    lg = FundingCollectorLogic(venues=("bybit", "binance"), config=CollectorConfig(**cfg))
    lg.set_markets("bybit", [Market("bybit", "BTCUSDT", 0.00055), Market("bybit", "ETHUSDT")])
    lg.set_markets("binance", [Market("binance", "BTCUSDT"), Market("binance", "SOLUSDT")])
    return lg


def test_bad_items_become_dead_letters_and_the_rest_flows() -> None:
    lg = logic()
    out = lg.on_funding(
        "bybit",
        [
            fr("bybit", "BTCUSDT", 0.0001, 8),
            fr("bybit", "ETHUSDT", float("nan"), 8),
            fr("bybit", "BAD.SYM", 0.0001, 8),
            fr("binance", "BTCUSDT", 0.0001, 8),
            {"not": "an event"},
        ],
        NOW,
    )
    good = [e for e in out if isinstance(e, FundingRate)]
    dead = [e for e in out if isinstance(e, DeadLetter)]
    assert [(e.venue, e.symbol) for e in good] == [("bybit", "BTCUSDT")]
    assert len(dead) == 4
    assert any("$.rate" in d.reason for d in dead)
    assert any("another venue" in d.reason for d in dead)
    assert lg.metrics.rejected.labels("bybit", "funding")._value.get() == 4


def test_unchanged_funding_is_republished_only_as_periodic_snapshot() -> None:
    lg = logic(snapshot_ms=60_000)
    first = lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW)
    again = lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW + 10_000)
    snap = lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW + 61_000)
    changed = lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0002, 8)], NOW + 62_000)
    assert (len(first), len(again), len(snap), len(changed)) == (1, 0, 1, 1)


def test_symbol_filters() -> None:
    lg = FundingCollectorLogic(
        config=CollectorConfig(symbol_pattern="^(BTC|ETH)", exclude_symbols=("ETHUSDT",))
    )
    kept = lg.set_markets("bybit", [Market("bybit", s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")])
    assert kept == ["BTCUSDT"]
    out = lg.on_funding("bybit", [fr("bybit", "SOLUSDT", 0.0001, 8)], NOW)
    assert out == []


def test_settlement_noticed_from_next_funding_time_and_published_once() -> None:
    lg = logic()
    t1 = NOW + 8 * H
    lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8, nxt=t1)], NOW)
    assert lg.settlements_due() == []
    lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0002, 8, nxt=t1 + 8 * H)], t1 + 1000)
    due = lg.settlements_due()
    assert [(p.venue, p.symbol, p.funding_time_ms) for p in due] == [("bybit", "BTCUSDT", t1)]
    settled = FundingRate(
        ts_ms=t1,
        venue="bybit",
        symbol="BTCUSDT",
        rate=0.00011,
        interval_hours=8,
        settled=True,
        funding_time_ms=t1,
    )
    out = lg.on_settled("bybit", [settled], t1 + 2000)
    assert out == [settled]
    assert lg.on_settled("bybit", [settled], t1 + 3000) == []
    assert lg.settlements_due() == []


def test_stale_feed_is_marked_once_and_excluded_from_spreads_and_readiness() -> None:
    lg = logic(stale_after_ms=30_000)
    lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW)
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.0001, 8)], NOW)
    lg.on_prices(
        "binance", [PriceTick(ts_ms=NOW, venue="binance", symbol="BTCUSDT", mark=1.0)], NOW
    )
    assert all(lg.readiness(NOW + 1000).values())
    # binance keeps answering, bybit goes quiet
    for t in (NOW + 20_000, NOW + 40_000):
        lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.0001, 8)], t)
        lg.on_prices(
            "binance", [PriceTick(ts_ms=t, venue="binance", symbol="BTCUSDT", mark=1.0)], t
        )
    out = lg.on_tick(NOW + 40_000)
    stale = [e for e in out if isinstance(e, FundingRate)]
    assert [(e.venue, e.symbol, e.stale) for e in stale] == [("bybit", "BTCUSDT", True)]
    assert stale[0].ts_ms == NOW  # the original observation time, not a refreshed one
    assert lg.on_tick(NOW + 45_000) == []
    ready = lg.readiness(NOW + 45_000)
    assert ready == {"funding_fresh_bybit": False, "funding_fresh_binance": True}
    assert lg.quotes(NOW + 45_000)[0].stale or lg.quotes(NOW + 45_000)[1].stale
    assert "funding:bybit:BTCUSDT" in lg.snapshot()["stale"]
    # recovery: a fresh value is published unflagged
    back = lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW + 50_000)
    assert [e.stale for e in back] == [False]


def test_spread_events_thresholds_alert_and_crossing_back() -> None:
    lg = logic(spread_threshold_bps_8h=3.0, spread_alert_bps_8h=20.0, horizon_hours=72)
    lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW)
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.0001, 8)], NOW)
    assert [e for e in lg.on_tick(NOW) if isinstance(e, FundingSpread)] == []
    # binance 4 h interval at 20 bp: 40 bp per 8 h vs 1 bp -> short binance, long bybit
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.002, 4)], NOW + 1000)
    out = lg.on_tick(NOW + 1000)
    spreads = [e for e in out if isinstance(e, FundingSpread)]
    alerts = [e for e in out if isinstance(e, Alert)]
    assert [(s.long_venue, s.short_venue) for s in spreads] == [("bybit", "binance")]
    s = spreads[0]
    assert s.spread_bps_per_8h == pytest.approx(39.0)
    assert s.cost_bps == pytest.approx(
        2 * (5.5 + 5) + 4 * 5
    )  # fees and default slippage without books
    assert s.net_bps == pytest.approx(s.gross_bps - s.cost_bps)
    assert len(alerts) == 1 and alerts[0].kind == "spread"
    gauge = lg.metrics.spread_bps.labels("BTCUSDT", "bybit", "binance")._value.get()
    assert gauge == pytest.approx(39.0)
    # back to parity: one event to say the spread closed, then silence
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.00005, 4)], NOW + 2000)
    closed = [e for e in lg.on_tick(NOW + 2000) if isinstance(e, FundingSpread)]
    assert len(closed) == 1 and closed[0].net_bps < 0
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.00004, 4)], NOW + 3000)
    assert [e for e in lg.on_tick(NOW + 3000) if isinstance(e, FundingSpread)] == []


def test_book_feeds_slippage_and_crossed_book_is_refused() -> None:
    lg = logic(horizon_hours=72)
    crossed = BookTop(
        ts_ms=NOW,
        venue="bybit",
        symbol="BTCUSDT",
        bids=[BookLevel(101.0, 1.0)],
        asks=[BookLevel(100.0, 1.0)],
    )
    out = lg.on_book("bybit", [crossed], NOW)
    assert isinstance(out[0], DeadLetter) and "crossed" in out[0].reason
    deep = [BookLevel(100.0, 1e6)]
    for v in ("bybit", "binance"):
        lg.on_book(
            v,
            [
                BookTop(
                    ts_ms=NOW, venue=v, symbol="BTCUSDT", bids=[BookLevel(99.99, 1e6)], asks=deep
                )
            ],
            NOW,
        )
    lg.on_funding("bybit", [fr("bybit", "BTCUSDT", 0.0001, 8)], NOW)
    lg.on_funding("binance", [fr("binance", "BTCUSDT", 0.0004, 4)], NOW)
    spreads = [e for e in lg.on_tick(NOW) if isinstance(e, FundingSpread)]
    half = 0.01 / 2 / 99.995 * 1e4  # half spread per fill from the book, no walk
    assert spreads[0].cost_bps == pytest.approx(21 + 4 * half)
