"""The risk engine without NATS: limits, fail-closed checks, stops, latch and resume."""

from __future__ import annotations

import pytest

from hean.risk.engine import RiskEngine, RiskRecord
from hean.risk.limits import RiskLimits
from hean.runtime.logic import Publish
from hean_proto.events import (
    ControlCommand,
    Fill,
    OrderIntent,
    OrderUpdate,
    Position,
    PriceTick,
    RiskDecision,
    RiskState,
    Signal,
    SignalLeg,
)

T = 1_767_225_600_000
_n = iter(range(10_000))


def tick(venue: str = "bybit", price: float = 100.0, ts: int = T, stale: bool = False):
    return PriceTick(ts_ms=ts, venue=venue, symbol="BTCUSDT", mark=price, stale=stale)


def sig(**over) -> Signal:
    values = dict(
        ts_ms=T,
        id=f"s{next(_n)}",
        strategy="harvester",
        symbol="BTCUSDT",
        legs=[SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy")],
        size_frac=0.02,
        confidence=0.9,
        stop_loss_frac=0.05,
    )
    values.update(over)
    return Signal(**values)


def decide(engine: RiskEngine, signal: Signal, now: int = T) -> RiskDecision:
    return next(o for o in engine.on_signal(signal, now) if isinstance(o, RiskDecision))


def engine(**limits) -> RiskEngine:
    e = RiskEngine(RiskLimits(**limits))
    e.on_price(tick(), T)
    return e


def test_exposure_caps_count_positions_and_pending_orders() -> None:
    e = engine(max_symbol_exposure_frac=0.05, max_gross_exposure_frac=0.5)
    assert decide(e, sig()).approved  # 200 USD pending
    assert decide(e, sig()).approved  # 400
    rejected = decide(e, sig())  # 600 > 500
    assert not rejected.approved and "BTCUSDT exposure" in rejected.reasons[0]
    # settled orders stop counting as pending; the position counts instead
    for cid in list(e.pending):
        e.on_order_update(_update(cid, "canceled"), T)
    assert decide(e, sig()).approved


def _update(cid: str, status: str, reason: str = "") -> OrderUpdate:
    return OrderUpdate(
        ts_ms=T,
        client_order_id=cid,
        intent_id="i",
        venue="bybit",
        symbol="BTCUSDT",
        side="buy",
        qty=1.0,
        status=status,
        reason=reason,
    )


def test_fails_closed_on_stale_or_missing_data_and_old_signals() -> None:
    e = engine()
    assert "no market data" in " ".join(
        decide(e, sig(legs=[SignalLeg(venue="bybit", symbol="ETHUSDT", side="buy")])).reasons
    )
    assert "expired" in " ".join(decide(e, sig(ts_ms=T - 60_000)).reasons)
    late = decide(e, sig(), now=T + 31_000)
    assert not late.approved and "bybit unhealthy" in " ".join(late.reasons)
    e.on_price(tick(ts=T + 1, stale=True), T + 1)
    assert "unhealthy" in decide(e, sig(), now=T + 1).reasons[0]


def test_duplicate_signal_gets_one_decision() -> None:
    """A redelivered signal gets the same decision and intent again (for the store to drop as
    duplicates, or to publish if the first publish failed); its exposure counts once."""
    e = engine()
    s = sig()
    first = e.on_signal(s, T)
    assert any(isinstance(o, OrderIntent) for o in first)
    exposure = e.snapshot()["exposure_usd"]
    assert e.on_signal(s, T + 5) == first
    assert e.snapshot()["exposure_usd"] == exposure
    assert e.counts["duplicate"] == 1 and e.counts["approved"] == 1
    rejected = sig(confidence=0.1)
    assert e.on_signal(rejected, T) == e.on_signal(rejected, T + 5)
    # beyond the outputs kept, a very old duplicate is still refused a second decision
    e.OUTPUTS_KEPT = 1
    e.on_signal(sig(), T)
    assert e.on_signal(s, T + 10) == []
    assert e.counts["approved"] == 2


def test_reducing_lets_only_reductions_through() -> None:
    e = engine()
    e.on_position(Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=1.0, entry_price=100), T)
    e.set_reducing("operator", T)
    assert "REDUCING" in decide(e, sig()).reasons[0]
    out = e.on_signal(
        sig(reduce_only=True, legs=[SignalLeg(venue="bybit", symbol="BTCUSDT", side="sell")]), T
    )
    intent = next(o for o in out if isinstance(o, OrderIntent))
    assert intent.reduce_only and intent.legs[0].qty == pytest.approx(1.0)  # capped at position
    wrong = sig(reduce_only=True)  # a buy does not reduce a long
    assert "nothing to reduce" in decide(e, wrong).reasons[0]


def test_loss_streak_and_rejections_halt_and_the_halt_is_latched() -> None:
    e = engine(max_loss_streak=3)
    realized = 0.0
    out: list = []
    e.on_position(Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=1.0), T)
    for _ in range(3):
        realized -= 1.0
        out = e.on_position(
            Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=0.0, realized_usd=realized), T
        )
    assert e.state == "HALTED" and "loss streak of 3" in e.record.reason
    cmds = [o.event for o in out if isinstance(o, Publish)]
    assert [c.command for c in cmds if isinstance(c, ControlCommand)] == ["cancel_all"]
    assert e.on_tick(T + 10**9) and e.state == "HALTED"  # no timer releases it
    e.resume(T + 10**9, "ops")
    assert e.state == "ACTIVE" and e.record.loss_streak == 0

    r = engine(max_rejections=3)
    for _ in range(5):  # router refusals are not venue rejections
        r.on_order_update(_update("x", "rejected", "refused: risk state stale"), T)
    assert r.state == "ACTIVE"
    for _ in range(3):
        r.on_order_update(_update("x", "rejected", "insufficient margin"), T)
    assert r.state == "HALTED" and "3 order rejections" in r.record.reason


def test_drawdown_halts_and_resume_takes_the_loss_as_the_new_high_water() -> None:
    e = engine(flatten_on_halt=True)
    e.on_position(Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=10, entry_price=100), T)
    out = e.on_price(tick(price=79.0), T + 1)  # -210 USD: 2.1 %
    assert e.state == "ACTIVE"
    e2 = RiskEngine(RiskLimits(capital_usd=1000.0, flatten_on_halt=True))
    e2.on_position(Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=10, entry_price=100), T)
    out = e2.on_price(tick(price=79.0), T + 1)  # -210 of 1000: 21 %
    assert e2.state == "HALTED"
    commands = [o.event.command for o in out if isinstance(o, Publish)]
    assert commands == ["cancel_all", "flatten"]
    state = next(o for o in out if isinstance(o, RiskState))
    assert state.drawdown_frac == pytest.approx(0.21)
    restored = RiskEngine(e2.limits, RiskRecord(**_fields(e2.record)))
    assert restored.state == "HALTED"
    restored.on_price(tick(price=79.0), T + 2)
    restored.resume(T + 3, "ops", "checked")
    assert restored.record.high_water_usd == pytest.approx(790.0)
    restored.on_price(tick(price=79.0, ts=T + 3), T + 4)
    assert restored.state == "ACTIVE"


def _fields(record: RiskRecord) -> dict:
    return {f: getattr(record, f) for f in record.__struct_fields__}


def test_stop_loss_from_marks_closes_the_filled_legs() -> None:
    e = engine()
    s = sig(stop_loss_frac=0.02, take_profit_frac=0.05)
    intent = next(o for o in e.on_signal(s, T) if isinstance(o, OrderIntent))
    leg = intent.legs[0]
    e.on_fill(
        Fill(
            ts_ms=T,
            fill_id="f",
            client_order_id=leg.client_order_id,
            intent_id=intent.id,
            venue="bybit",
            symbol="BTCUSDT",
            side="buy",
            qty=leg.qty,
            price=100.0,
            fee_usd=0.0,
        ),
        T,
    )
    assert not [
        o for o in e.on_price(tick(price=99.0, ts=T + 1), T + 1) if isinstance(o, OrderIntent)
    ]
    out = e.on_price(tick(price=97.9, ts=T + 2), T + 2)
    exit_intent = next(o for o in out if isinstance(o, OrderIntent))
    assert exit_intent.reduce_only and exit_intent.legs[0].side == "sell"
    assert exit_intent.legs[0].qty == pytest.approx(leg.qty)
    assert not e.on_price(tick(price=90.0, ts=T + 3), T + 3)  # exits once


def test_resume_endpoint_refuses_without_the_token() -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from hean_services.risk_killswitch.logic import RiskKillswitchLogic
    from hean_services.risk_killswitch.main import Operator, http_routes

    app = FastAPI()
    app.include_router(http_routes(Operator(RiskKillswitchLogic(), "tok")))
    client = TestClient(app)
    assert client.post("/risk/resume").status_code == 401
    assert client.post("/risk/resume", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/risk/halt", headers={"Authorization": "tok"}).status_code == 401
    # the right token gets past authentication (the service is not started here)
    answer = client.post("/risk/resume", headers={"Authorization": "Bearer tok"}, json={})
    assert answer.status_code == 503
    assert client.get("/risk/state").json()["state"] == "ACTIVE"


def _filled(e: RiskEngine, intent: OrderIntent, price: float) -> None:
    for leg in intent.legs:
        e.on_fill(
            Fill(
                ts_ms=T,
                fill_id=f"f{leg.client_order_id}",
                client_order_id=leg.client_order_id,
                intent_id=intent.id,
                venue=leg.venue,
                symbol=leg.symbol,
                side=leg.side,
                qty=leg.qty,
                price=price,
                fee_usd=0.0,
            ),
            T,
        )
        sign = 1.0 if leg.side == "buy" else -1.0
        e.on_position(
            Position(
                ts_ms=T,
                venue=leg.venue,
                symbol=leg.symbol,
                qty=sign * leg.qty,
                entry_price=price,
                mark_price=price,
            ),
            T,
        )


def test_an_exit_after_a_rise_closes_the_whole_position_and_its_stop_watch() -> None:
    e = engine()
    entry = next(o for o in e.on_signal(sig(take_profit_frac=0.5), T) if isinstance(o, OrderIntent))
    _filled(e, entry, 100.0)
    e.on_price(tick(price=130.0, ts=T + 1), T + 1)  # up 30 %: the entry's capital buys less now
    exit_signal = sig(
        legs=[SignalLeg(venue="bybit", symbol="BTCUSDT", side="sell")],
        reduce_only=True,
        stop_loss_frac=None,
    )
    exit_intent = next(o for o in e.on_signal(exit_signal, T + 1) if isinstance(o, OrderIntent))
    assert exit_intent.legs[0].qty == pytest.approx(entry.legs[0].qty)  # all of it, no remnant
    assert entry.id not in e.protections  # no later stop exit for a unit already closed
    assert not [
        o for o in e.on_price(tick(price=60.0, ts=T + 2), T + 2) if isinstance(o, OrderIntent)
    ]


# ---------------------------------------------------------------------------------- spot legs


def spot_unit(**over) -> Signal:
    """A harvester entry: perp short on bybit, spot long on bybit."""
    return sig(
        legs=[
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="sell"),
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy", instrument="spot"),
        ],
        **over,
    )


def test_spot_leg_priced_at_the_venue_index_and_approved_with_its_perp() -> None:
    e = RiskEngine(RiskLimits())
    e.on_price(PriceTick(ts_ms=T, venue="bybit", symbol="BTCUSDT", mark=100.0, index=80.0), T)
    out = e.on_signal(spot_unit(), T)
    decision = next(o for o in out if isinstance(o, RiskDecision))
    intent = next(o for o in out if isinstance(o, OrderIntent))
    assert decision.approved, decision.reasons
    perp, spot = intent.legs
    assert (perp.instrument, spot.instrument) == ("perp", "spot")
    assert perp.qty == pytest.approx(200.0 / 100.0)  # 2 % of 10 000 at the mark
    assert spot.qty == pytest.approx(200.0 / 80.0)  # at the index
    by_instrument = e.snapshot()["exposure_by_instrument_usd"]
    assert by_instrument == {"perp": {"BTCUSDT": 200.0}, "spot": {"BTCUSDT": 200.0}}


def test_spot_leg_without_a_fresh_index_rejects_the_whole_unit() -> None:
    e = engine()  # the tick carries no index: no spot price
    missing = decide(e, spot_unit())
    assert not missing.approved
    assert missing.reasons == ["bybit:BTCUSDT:spot: no spot price (venue index)"]
    e.on_price(PriceTick(ts_ms=T, venue="bybit", symbol="BTCUSDT", mark=100.0, index=99.9), T)
    later = T + 31_000
    e.on_price(tick(ts=later), later)  # the perp is fresh again, the index is not
    stale = decide(e, spot_unit(ts_ms=later), later)
    assert not stale.approved
    assert stale.reasons == ["bybit:BTCUSDT:spot: spot price (venue index) stale (31000 ms old)"]
    assert not any(isinstance(o, OrderIntent) for o in e.on_signal(spot_unit(), later))


def test_spot_sell_cannot_open_a_short_and_positions_are_kept_per_instrument() -> None:
    e = RiskEngine(RiskLimits())
    e.on_price(PriceTick(ts_ms=T, venue="bybit", symbol="BTCUSDT", mark=100.0, index=100.0), T)
    sell = [SignalLeg(venue="bybit", symbol="BTCUSDT", side="sell", instrument="spot")]
    refused = decide(e, sig(legs=sell))
    assert not refused.approved
    assert "would open a short (holds 0; spot is not borrowed)" in refused.reasons[0]
    # a perp long of the same symbol on the same venue is no spot holding
    e.on_position(Position(ts_ms=T, venue="bybit", symbol="BTCUSDT", qty=5.0, entry_price=100.0), T)
    assert not decide(e, sig(legs=sell)).approved
    e.on_position(
        Position(
            ts_ms=T,
            venue="bybit",
            symbol="BTCUSDT",
            qty=2.0,
            entry_price=100.0,
            instrument="spot",
        ),
        T,
    )
    assert set(e.record.positions) == {"bybit:BTCUSDT", "bybit:BTCUSDT:spot"}
    # reduce-only exit of the spot leg sells the spot holding, not the perp
    out = e.on_signal(sig(legs=sell, reduce_only=True), T)
    intent = next(o for o in out if isinstance(o, OrderIntent))
    assert intent.legs[0].instrument == "spot" and intent.legs[0].qty == pytest.approx(2.0)
    # the approved exit is pending: a second sell of the same holding would open a short
    assert not decide(e, sig(legs=sell, reduce_only=True)).approved


def test_pending_exposure_kept_as_orders_come_and_go_equals_a_recount() -> None:
    """The per-signal exposure check reads a running sum of the orders in flight; after every
    approval, settlement, expiry and halt it equals the sum recounted from the orders."""
    import random

    def recount(e: RiskEngine) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for p in e.pending.values():
            out[(p.instrument, p.symbol)] = out.get((p.instrument, p.symbol), 0.0) + p.notional_usd
        return out

    def pending_part(e: RiskEngine) -> dict[tuple[str, str], float]:
        return {k: v for k, v in e._pending_usd.items() if v > 1e-9}

    rng = random.Random(5)
    e = engine(
        capital_usd=1e9,
        max_symbol_exposure_frac=1.0,
        max_gross_exposure_frac=1.0,
        max_rejections=1_000_000,
    )
    e.on_price(tick("binance"), T)
    now = T
    most = 0
    for step in range(400):
        now += rng.choice((0, 50, 500))
        e.on_price(tick(ts=now), now)
        e.on_price(tick("binance", ts=now), now)
        roll = rng.random()
        if roll < 0.5:
            legs = [SignalLeg(venue=rng.choice(("bybit", "binance")), symbol="BTCUSDT", side="buy")]
            size = rng.uniform(1e-6, 1e-4)
            assert decide(e, sig(ts_ms=now, legs=legs, size_frac=size), now).approved
        elif roll < 0.8 and e.pending:
            cid = rng.choice(list(e.pending))
            e.on_order_update(_update(cid, rng.choice(("filled", "canceled", "rejected"))), now)
        else:
            e.on_tick(now + rng.choice((0, e.limits.pending_ttl_ms)))
        assert pending_part(e) == pytest.approx(recount(e)), step
        most = max(most, len(e.pending))
    assert most >= 5  # many orders were in flight at once, so the sums were not trivial
    assert decide(e, sig(ts_ms=now), now).approved and e.pending
    e.halt("test", now)
    assert e._pending_usd == {} and e.pending == {}
