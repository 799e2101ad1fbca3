"""strategy-engine in-process over a real nats-server, fed spread events on the bus."""

from __future__ import annotations

import asyncio

import nats
import pytest
from service_helpers import Tap, of, running

from hean.config import ConfigError, free_port
from hean.marketdata.spreads import Quote, SpreadParams, spread
from hean_proto import codec
from hean_proto.events import FundingSpread, OrderUpdate, RiskDecision, Signal
from hean_proto.subjects import subject_for
from hean_services.strategy_engine.logic import StrategyEngineLogic, check_signal
from hean_services.strategy_engine.main import Settings, build, strategies_from

T0 = 1_767_225_600_000
H = 3_600_000


def divergence(long_rate: float, short_rate: float, t: int) -> FundingSpread:
    """What the collector publishes: bybit 8-hourly against binance 4-hourly."""
    a = Quote("bybit", "BTCUSDT", long_rate, 8.0, taker_fee=0.00055, ts_ms=t)
    b = Quote("binance", "BTCUSDT", short_rate, 4.0, taker_fee=0.0005, ts_ms=t)
    return spread(a, b, SpreadParams(horizon_hours=72.0), t)


async def test_divergence_gives_one_two_leg_signal_and_convergence_the_exit(nats_url: str):
    settings = Settings(
        nats_url=nats_url,
        health_port=free_port(),
        strategies=["cross_venue_arb"],
        strategy_config={"cross_venue_arb": {"symbols": ["BTCUSDT"]}},
    )
    tap = Tap()
    await tap.start(nats_url)
    pub = await nats.connect(nats_url)
    try:
        async with running(build(settings), settings):
            # the collector republishes a wide spread several times while it lasts
            for i in range(3):
                s = divergence(0.0001, 0.0008, T0 + i * 60_000)
                await pub.publish(subject_for(s), codec.encode(s))
            enters = await tap.until(of(Signal, reduce_only=False))
            # an unrelated garbage message is dead-lettered, not fatal
            await pub.publish("hean.md.spread.BTCUSDT", b"{not json")
            converged = divergence(0.0001, 0.00006, T0 + 4 * H)
            await pub.publish(subject_for(converged), codec.encode(converged))
            exits = await tap.until(of(Signal, reduce_only=True))
            await pub.flush()
            await asyncio.sleep(0.3)  # let any duplicate signal arrive before counting
            enters = of(Signal, reduce_only=False)(tap.events)
            exits = of(Signal, reduce_only=True)(tap.events)
    finally:
        await pub.close()
        await tap.close()
    assert len(enters) == 1 and len(exits) == 1
    enter, exit_ = enters[0], exits[0]
    assert enter.strategy == "cross_venue_arb" and enter.symbol == "BTCUSDT"
    assert [(leg.venue, leg.side) for leg in enter.legs] == [("bybit", "buy"), ("binance", "sell")]
    assert 0 < enter.size_frac <= 0.02 and enter.stop_loss_frac is not None
    assert [(leg.venue, leg.side) for leg in exit_.legs] == [("bybit", "sell"), ("binance", "buy")]
    assert "closed" in exit_.reason and exit_.id != enter.id


def test_engine_isolates_a_failing_strategy_and_drops_oversized_signals():
    class Broken:
        name = "broken"
        inputs = (FundingSpread,)

        def on_event(self, event, now_ms):
            raise RuntimeError("boom")

    class Greedy:
        name = "greedy"
        inputs = (FundingSpread,)
        config = type("C", (), {"max_size_frac": 0.02})()

        def on_event(self, event, now_ms):
            from hean.strategies.base import make_signal
            from hean_proto.events import SignalLeg

            leg = SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy")
            return [
                make_signal(
                    strategy="greedy",
                    symbol="BTCUSDT",
                    kind="enter",
                    now_ms=now_ms,
                    legs=[leg],
                    size_frac=0.5,
                    confidence=1,
                    reason="too big",
                )
            ]

    arb = strategies_from(Settings(strategies=["cross_venue_arb"]))[0]
    logic = StrategyEngineLogic([Broken(), Greedy(), arb])
    out = logic.on_event(divergence(0.0001, 0.0008, T0), T0)
    assert [s.strategy for s in out] == ["cross_venue_arb"]
    assert logic.metrics.errors.labels("broken")._value.get() == 1
    assert logic.metrics.dropped.labels("greedy", "size_above_cap")._value.get() == 1
    assert check_signal(out[0], 0.02) is None
    # a rejected entry is forgotten, so the next divergence enters again
    logic.on_event(
        RiskDecision(
            ts_ms=T0, signal_id=out[0].id, strategy=arb.name, symbol="BTCUSDT", approved=False
        ),
        T0,
    )
    assert len(logic.on_event(divergence(0.0001, 0.0008, T0 + H), T0 + H)) == 1


def test_settings_errors_name_the_setting():
    with pytest.raises(ConfigError, match="HEAN_STRATEGIES"):
        strategies_from(Settings(strategies=["nope"]))
    with pytest.raises(ConfigError, match="cross_venue_arb"):
        strategies_from(
            Settings(
                strategies=["cross_venue_arb"],
                strategy_config={"cross_venue_arb": {"size_frac": 0.9}},
            )
        )
    with pytest.raises(ConfigError, match="HEAN_STRATEGY_CONFIG"):
        strategies_from(Settings(strategy_config="{bad"))
    parsed = strategies_from(
        Settings(
            strategies=["cross-venue-arb"],
            strategy_config='{"cross_venue_arb": {"symbols": ["ETHUSDT"]}}',
        )
    )
    assert parsed[0].config.symbols == ["ETHUSDT"]


def test_an_unwound_entry_is_dropped_so_the_strategy_can_enter_again():
    engine = StrategyEngineLogic(strategies_from(Settings(strategies=["cross_venue_arb"])))
    first = [
        o for o in engine.on_event(divergence(0.0001, 0.0008, T0), T0) if isinstance(o, Signal)
    ]
    assert len(first) == 1
    approved = RiskDecision(
        ts_ms=T0,
        signal_id=first[0].id,
        strategy=first[0].strategy,
        symbol="BTCUSDT",
        approved=True,
        intent_id="intent-1",
    )
    engine.on_event(approved, T0)
    again = divergence(0.0001, 0.0008, T0 + 60_000)
    assert not engine.on_event(again, T0 + 60_000)  # holds the unit: no second entry
    unwound = OrderUpdate(
        ts_ms=T0 + 1,
        client_order_id="c1",
        intent_id="intent-1",
        venue="binance",
        symbol="BTCUSDT",
        side="buy",
        qty=0.1,
        status="unwound",
        reason="leg on bybit rejected",
    )
    engine.on_event(unwound, T0 + 61_000)
    assert engine.by_name["cross_venue_arb"].open_positions() == []
    later = divergence(0.0001, 0.0008, T0 + 120_000)
    assert [o for o in engine.on_event(later, T0 + 120_000) if isinstance(o, Signal)]
