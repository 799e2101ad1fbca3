"""Funding harvester and cross-venue arbitrage on hand-built event sequences."""

from __future__ import annotations

import pytest

from hean.marketdata.spreads import Quote, SpreadParams, spread
from hean.strategies import STRATEGIES, build
from hean.strategies.base import PositionBook, StrategyConfig, signal_id
from hean.strategies.funding_arbitrage import ArbitrageConfig, FundingArbitrage
from hean.strategies.funding_harvester import FundingHarvester, HarvesterConfig
from hean_proto.events import (
    FundingForecast,
    FundingRate,
    FundingSpread,
    PriceTick,
    RiskDecision,
)

H = 3_600_000
T0 = 1_750_000_000_000


def forecast(
    pred: float,
    *,
    current: float | None = None,
    action: str = "ENTER",
    conf: float = 0.8,
    venue: str = "bybit",
    ih: float = 8.0,
    t: int = T0,
) -> FundingForecast:
    return FundingForecast(
        ts_ms=t,
        venue=venue,
        symbol="BTCUSDT",
        interval_hours=ih,
        current_rate=pred if current is None else current,
        predicted_rate=pred,
        lower_rate=pred - 0.0001,
        upper_rate=pred + 0.0001,
        confidence=conf,
        action=action,
        model_version="test",
        for_funding_ms=t + int(ih * H),
    )


def rate(venue: str, r: float, ih: float, t: int, settled: bool = True) -> FundingRate:
    return FundingRate(
        ts_ms=t,
        venue=venue,
        symbol="BTCUSDT",
        rate=r,
        interval_hours=ih,
        settled=settled,
        funding_time_ms=t if settled else None,
    )


def tick(venue: str, mark: float, t: int, index: float | None = None) -> PriceTick:
    return PriceTick(ts_ms=t, venue=venue, symbol="BTCUSDT", mark=mark, index=index or mark)


def spread_event(
    long_v: str,
    long_r: float,
    long_ih: float,
    short_v: str,
    short_r: float,
    short_ih: float,
    t: int,
) -> FundingSpread:
    """Built by the collector's own spread function, so the test speaks its language."""
    a = Quote(long_v, "BTCUSDT", long_r, long_ih, taker_fee=0.0005, ts_ms=t)
    b = Quote(short_v, "BTCUSDT", short_r, short_ih, taker_fee=0.0005, ts_ms=t)
    return spread(a, b, SpreadParams(horizon_hours=72.0, default_slippage_bps=2.0), t)


# ----------------------------------------------------------------------------- contract


def test_registry_and_contract():
    assert {"funding_harvester", "cross_venue_arb"} <= set(STRATEGIES)
    for name in ("funding_harvester", "cross_venue_arb"):
        s = build(name)
        assert s.name == name
        assert s.inputs and all(isinstance(k, type) for k in s.inputs)
    with pytest.raises(ValueError, match="unknown strategy"):
        build("no_such_strategy")
    with pytest.raises(ValueError, match="max_size_frac"):
        build("funding_harvester", {"size_frac": 0.5})
    assert StrategyConfig().size_frac <= 0.02
    assert signal_id("a", "B", "enter", 1) == signal_id("a", "B", "enter", 1)
    assert len(signal_id("a", "B", "enter", 1)) == 32


def test_position_book_rolls_back_rejections():
    h = FundingHarvester()
    h.on_event(tick("bybit", 100.0, T0), T0)
    [sig] = h.on_event(forecast(0.0005), T0)
    assert len(h.positions) == 1
    h.on_decision(
        RiskDecision(ts_ms=T0, signal_id=sig.id, strategy=h.name, symbol="BTCUSDT", approved=False),
        T0,
    )
    assert len(h.positions) == 0
    # a rejected exit restores the position
    [sig] = h.on_event(forecast(0.0005, t=T0 + H), T0 + H)
    [ex] = h.on_event(forecast(0.0005, action="EXIT", t=T0 + 2 * H), T0 + 2 * H)
    assert len(h.positions) == 0
    book: PositionBook = h.positions
    book.on_decision(
        RiskDecision(ts_ms=T0, signal_id=ex.id, strategy=h.name, symbol="BTCUSDT", approved=False)
    )
    assert len(h.positions) == 1


# ----------------------------------------------------------------------------- harvester


def test_harvester_enter_hold_exit():
    h = FundingHarvester()
    h.on_event(tick("bybit", 100.0, T0, index=99.9), T0)
    # 5 bps per 8 h for 72 h = 45 bps expected vs 2 * (5.5+2) + 2 * (10+2) = 39 bps costs
    [sig] = h.on_event(forecast(0.0005), T0)
    assert sig.strategy == "funding_harvester" and not sig.reduce_only
    assert [(leg.venue, leg.side, leg.instrument) for leg in sig.legs] == [
        ("bybit", "sell", "perp"),
        ("bybit", "buy", "spot"),
    ]
    assert 0 < sig.size_frac <= 0.02
    assert sig.stop_loss_frac and sig.take_profit_frac
    assert sig.confidence == 0.8 and "ENTER" in sig.reason and "costs" in sig.reason
    # same event again: deterministic id, and no second position
    again = FundingHarvester()
    again.on_event(tick("bybit", 100.0, T0, index=99.9), T0)
    assert again.on_event(forecast(0.0005), T0)[0].id == sig.id
    assert h.on_event(forecast(0.0005, t=T0 + 1), T0 + 1) == []
    # HOLD and a settlement in our favour keep the position
    assert h.on_event(forecast(0.0004, action="HOLD", t=T0 + 8 * H), T0 + 8 * H) == []
    assert h.on_event(rate("bybit", 0.0004, 8, T0 + 8 * H), T0 + 8 * H) == []
    assert h.positions.get("bybit:BTCUSDT").info["funding_frac"] == pytest.approx(0.0004)
    # the forecast says EXIT: one reduce-only signal with the opposite legs
    [ex] = h.on_event(forecast(0.0001, action="EXIT", t=T0 + 16 * H), T0 + 16 * H)
    assert ex.reduce_only and "EXIT" in ex.reason
    assert [(leg.side, leg.instrument) for leg in ex.legs] == [("buy", "perp"), ("sell", "spot")]
    assert len(h.positions) == 0


def test_harvester_no_trade_cases():
    h = FundingHarvester()
    assert h.on_event(forecast(0.0005, conf=0.5), T0) == []  # low confidence
    assert h.on_event(forecast(0.0005, action="HOLD"), T0) == []  # not ENTER
    assert h.on_event(forecast(0.0005, current=-0.0001), T0) == []  # sign disagrees
    # 3 bps per 8 h over 72 h = 27 bps < 39 bps of fees and slippage: costs kill it
    assert h.on_event(forecast(0.0003), T0) == []
    # negative funding needs a short spot hedge, off by default
    assert h.on_event(forecast(-0.0010), T0) == []
    assert h.skips["costs_exceed_funding"] == 1 and h.skips["needs_spot_short"] == 1
    # a symbol outside the configured universe
    only_eth = FundingHarvester(HarvesterConfig(symbols=["ETHUSDT"]))
    assert only_eth.on_event(forecast(0.0010), T0) == []


def test_harvester_intervals_are_normalised_per_hour():
    """2.5 bps per 4 h is 5 bps per 8 h: it trades where 2.5 bps per 8 h would not."""
    h = FundingHarvester()
    [sig] = h.on_event(forecast(0.00025, ih=4.0, venue="binance"), T0)
    assert "per 4h" in sig.reason
    assert FundingHarvester().on_event(forecast(0.00025, ih=8.0), T0) == []


def test_harvester_exits_on_flip_and_stop_loss():
    h = FundingHarvester()
    h.on_event(tick("bybit", 100.0, T0), T0)
    h.on_event(forecast(0.0008), T0)
    [ex] = h.on_event(rate("bybit", -0.0002, 8, T0 + 8 * H), T0 + 8 * H)
    assert "flipped" in ex.reason and ex.reduce_only
    # the forecast turning against the position with confidence also exits
    h.on_event(forecast(0.0008, t=T0 + 9 * H), T0 + 9 * H)
    [ex] = h.on_event(forecast(-0.0002, action="HOLD", t=T0 + 10 * H), T0 + 10 * H)
    assert "flips" in ex.reason
    # stop-loss: the spot hedge falls while the perp does not (basis blow-out)
    h = FundingHarvester(HarvesterConfig(stop_loss_frac=0.01, take_profit_frac=None))
    h.on_event(tick("bybit", 100.0, T0, index=100.0), T0)
    h.on_event(forecast(0.0008), T0)
    assert h.on_event(tick("bybit", 100.0, T0 + H, index=99.5), T0 + H) == []
    [ex] = h.on_event(tick("bybit", 100.5, T0 + 2 * H, index=99.4), T0 + 2 * H)
    assert "stop-loss" in ex.reason


def test_harvester_perp_hedge_charges_the_other_venue_funding():
    cfg = HarvesterConfig(hedge="perp", hedge_venue="binance")
    h = FundingHarvester(cfg)
    assert h.on_event(forecast(0.0008), T0) == []  # hedge venue's rate unknown: fail closed
    h.on_event(rate("binance", 0.0001, 8, T0, settled=False), T0)
    [sig] = h.on_event(forecast(0.0008), T0)
    assert [(leg.venue, leg.side, leg.instrument) for leg in sig.legs] == [
        ("bybit", "sell", "perp"),
        ("binance", "buy", "perp"),
    ]
    expected, cost, _ = h.edge_bps(forecast(0.0008))
    assert expected == pytest.approx((8 - 1) * 9)  # (8 - 1) bps per 8 h over 72 h
    assert cost == pytest.approx(2 * (5.5 + 2) + 2 * (5 + 2))


def test_harvester_limits_need_leg_prices_seen_together():
    """One venue's new price against the other's hours-old one is no profit to take."""
    h = FundingHarvester(HarvesterConfig(hedge="perp", hedge_venue="binance"))
    h.on_event(rate("binance", 0.0001, 8, T0, settled=False), T0)
    h.on_event(tick("bybit", 100.0, T0), T0)
    h.on_event(tick("binance", 100.0, T0), T0)
    [entry] = h.on_event(forecast(0.0008), T0)
    assert [leg.side for leg in entry.legs] == ["sell", "buy"]
    later = T0 + 4 * H
    # bybit (short) falls 5 %: alone it reads as a 5 % profit, past the 2 % take-profit
    assert h.on_event(tick("bybit", 95.0, later), later) == []
    # binance fell with it: the hedged unit made nothing, still no exit
    assert h.on_event(tick("binance", 95.0, later + 1000), later + 1000) == []
    # a real gap between the legs, both seen now: take-profit
    [ex] = h.on_event(tick("binance", 98.0, later + 2000), later + 2000)
    assert ex.reduce_only and "take-profit" in ex.reason


# ----------------------------------------------------------------------------- arbitrage


def test_arb_enter_hold_exit_with_different_intervals():
    arb = FundingArbitrage()
    # binance settles every 4 h: 6 bps per 4 h = 12 bps per 8 h; bybit 1 bps per 8 h
    s = spread_event("bybit", 0.0001, 8, "binance", 0.0006, 4, T0)
    assert s.long_venue == "bybit" and s.short_venue == "binance"
    [sig] = arb.on_event(s, T0)
    assert [(leg.venue, leg.side) for leg in sig.legs] == [("bybit", "buy"), ("binance", "sell")]
    assert "11.00 bps per 8h" in sig.reason
    assert sig.size_frac <= 0.02 and 0 < sig.confidence <= 1
    # still wide: hold, whether the collector republishes or a rate arrives
    assert (
        arb.on_event(spread_event("bybit", 0.0001, 8, "binance", 0.0005, 4, T0 + H), T0 + H) == []
    )
    assert arb.on_event(rate("binance", 0.0005, 4, T0 + 4 * H), T0 + 4 * H) == []
    pos = arb.positions.values()[0]
    assert pos.info["funding_frac"] == pytest.approx(0.0005)  # short leg received
    # convergence seen through a new rate on one venue: exit once
    [ex] = arb.on_event(rate("binance", 0.00005, 4, T0 + 8 * H), T0 + 8 * H)
    assert ex.reduce_only and "closed" in ex.reason
    assert [(leg.venue, leg.side) for leg in ex.legs] == [("bybit", "sell"), ("binance", "buy")]
    assert arb.on_event(rate("binance", 0.00005, 4, T0 + 9 * H), T0 + 9 * H) == []


def test_arb_exit_on_reversal_from_a_spread_event():
    arb = FundingArbitrage()
    [sig] = arb.on_event(spread_event("okx", -0.0002, 8, "bybit", 0.0008, 8, T0), T0)
    reversed_ = spread_event("bybit", 0.0000, 8, "okx", 0.0006, 8, T0 + H)
    [ex] = arb.on_event(reversed_, T0 + H)
    assert "reversed" in ex.reason and ex.id != sig.id


def test_arb_costs_make_a_small_spread_unprofitable():
    arb = FundingArbitrage()
    # 3 bps per 8 h over 72 h = 27 bps gross, costs of two legs in and out are larger
    s = spread_event("bybit", 0.0001, 8, "binance", 0.0004, 8, T0)
    assert s.gross_bps == pytest.approx(27.0)
    assert arb.on_event(s, T0) == []
    assert arb.skips["costs_exceed_spread"] == 1
    # the same spread per hour, held long enough, pays: the horizon decides
    patient = FundingArbitrage(ArbitrageConfig(horizon_hours=24 * 14, enter_net_bps_8h=0.5))
    assert len(patient.on_event(s, T0)) == 1
    # a stale spread never opens a position
    stale = FundingSpread(**{**{f: getattr(s, f) for f in s.__struct_fields__}, "stale": True})
    assert FundingArbitrage().on_event(stale, T0) == []


def test_arb_stop_loss_on_a_leg_gap():
    arb = FundingArbitrage(ArbitrageConfig(stop_loss_frac=0.01, take_profit_frac=None))
    arb.on_event(tick("bybit", 100.0, T0), T0)
    arb.on_event(tick("binance", 100.0, T0), T0)
    arb.on_event(spread_event("bybit", 0.0001, 8, "binance", 0.0010, 8, T0), T0)
    assert arb.on_event(tick("binance", 100.5, T0 + H), T0 + H) == []
    [ex] = arb.on_event(tick("binance", 101.2, T0 + 2 * H), T0 + 2 * H)
    assert "stop-loss" in ex.reason
