"""liquidation_hunter: enter with a confident, directed cascade; no trade when unclear; exit."""

from __future__ import annotations

import pytest

from hean.strategies import build
from hean.strategies.base import Strategy
from hean.strategies.liquidation_hunter import LiquidationHunter
from hean_proto.events import CascadeForecast, PriceTick, RiskDecision

T = 1_767_225_600_000


def fc(p: float, direction: str = "down", mom: float = -0.01, t: int = T) -> CascadeForecast:
    return CascadeForecast(
        ts_ms=t,
        venue="binance",
        symbol="BTCUSDT",
        probability=p,
        direction=direction,
        model_version="m1",
        momentum_15m_frac=mom,
    )


def tick(px: float, t: int) -> PriceTick:
    return PriceTick(ts_ms=t, venue="binance", symbol="BTCUSDT", mark=px)


def test_enters_short_on_confident_down_cascade_with_momentum() -> None:
    h = build("liquidation_hunter")
    assert isinstance(h, Strategy) and h.name == "liquidation_hunter"
    h.on_event(tick(100.0, T - 1), T - 1)
    [s] = h.on_event(fc(0.82), T)
    assert s.strategy == "liquidation_hunter" and s.legs[0].side == "sell"
    assert s.size_frac == pytest.approx(0.02) and s.size_frac <= 0.02
    assert (s.stop_loss_frac, s.take_profit_frac) == (0.02, 0.05)
    assert s.confidence == pytest.approx(0.82) and not s.reduce_only
    # deterministic id: the same events give the same signal id
    h2 = LiquidationHunter()
    h2.on_event(tick(100.0, T - 1), T - 1)
    assert h2.on_event(fc(0.82), T)[0].id == s.id
    # already in: a second forecast does not stack another entry
    assert h.on_event(fc(0.85, t=T + 1000), T + 1000) == []


def test_long_on_up_cascade_and_configurable_sizes() -> None:
    h = LiquidationHunter({"size_frac": 0.01, "stop_loss_frac": 0.03, "take_profit_frac": 0.06})
    [s] = h.on_event(fc(0.9, "up", 0.008), T)
    assert s.legs[0].side == "buy" and s.size_frac == 0.01
    assert (s.stop_loss_frac, s.take_profit_frac) == (0.03, 0.06)
    with pytest.raises(ValueError):
        LiquidationHunter({"size_frac": 0.05})


def test_exit_probability_must_be_below_the_threshold() -> None:
    """Else the forecast that lets a trade in closes it on the next update."""
    with pytest.raises(ValueError, match=r"exit_probability=0\.3 must be below threshold=0\.2"):
        LiquidationHunter({"threshold": 0.2})
    h = LiquidationHunter({"threshold": 0.2, "exit_probability": 0.1, "take_profit_frac": 0.12})
    h.on_event(tick(100.0, T - 1), T - 1)
    assert len(h.on_event(fc(0.22, t=T), T)) == 1
    assert h.on_event(fc(0.22, t=T + 60_000), T + 60_000) == []  # still in, no flip-flop


@pytest.mark.parametrize(
    ("p", "direction", "mom"),
    [
        (0.6, "down", -0.01),  # below threshold
        (0.9, "none", -0.01),  # no direction
        (0.9, "down", 0.0),  # momentum flat
        (0.9, "down", 0.01),  # momentum against the forecast
    ],
)
def test_no_trade_when_unsure(p: float, direction: str, mom: float) -> None:
    assert LiquidationHunter().on_event(fc(p, direction, mom), T) == []


def test_no_trade_when_costs_eat_the_edge() -> None:
    h = LiquidationHunter({"min_edge_bps": 300.0})
    # 0.75 * 500 - 0.25 * 200 - 14 = 311 bps passes, 0.71 gives 282 bps and does not
    assert h.edge_bps(0.75, "binance") == pytest.approx(311.0)
    assert h.on_event(fc(0.71), T) == []
    assert len(h.on_event(fc(0.75), T)) == 1


def test_exits_after_the_cascade_and_on_take_profit() -> None:
    h = LiquidationHunter()
    h.on_event(tick(100.0, T - 1), T - 1)
    [entry] = h.on_event(fc(0.8), T)
    assert h.on_event(fc(0.5, t=T + 60_000), T + 60_000) == []  # still on
    [ex] = h.on_event(fc(0.1, t=T + 120_000), T + 120_000)
    assert ex.reduce_only and ex.legs[0].side == "buy" and "cascade over" in ex.reason
    assert h.open_positions() == []
    # a new entry, closed by the price reaching the take-profit (short: price down 5 %)
    [entry2] = h.on_event(fc(0.8, t=T + 180_000), T + 180_000)
    assert h.on_event(tick(97.0, T + 190_000), T + 190_000) == []
    [tp] = h.on_event(tick(94.9, T + 200_000), T + 200_000)
    assert tp.reduce_only and "take-profit" in tp.reason
    assert entry2.id != entry.id


def test_rejected_entry_is_forgotten_and_max_hold_exit() -> None:
    h = LiquidationHunter({"max_hold_minutes": 30})
    [s] = h.on_event(fc(0.8), T)
    h.on_decision(
        RiskDecision(ts_ms=T, signal_id=s.id, strategy=h.name, symbol="BTCUSDT", approved=False),
        T,
    )
    assert h.open_positions() == []
    h.on_event(fc(0.8, t=T + 1), T + 1)
    [ex] = h.on_event(fc(0.8, t=T + 31 * 60_000), T + 31 * 60_000)
    assert "max hold" in ex.reason
