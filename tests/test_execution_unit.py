"""Execution building blocks without NATS: ids, ledger, paper fills, the router's book, gate."""

from __future__ import annotations

import asyncio

import pytest

from hean.clock import SimClock
from hean.execution import ids
from hean.execution.book import OrderRecord, RouterBook
from hean.execution.gate import RiskGate
from hean.execution.ledger import Ledger, PositionBook, position_key, split_key
from hean.execution.paper import PaperConfig, PaperVenue
from hean.venues.base import DuplicateClientOrderId, OrderRejected
from hean_proto.events import BookLevel, BookTop, Fill, PriceTick, RiskState

T = 1_767_225_600_000


def test_client_order_ids_are_deterministic_short_and_alphanumeric() -> None:
    a, b = ids.leg_order_id("sig-1", 0), ids.leg_order_id("sig-1", 1)
    assert a == ids.leg_order_id("sig-1", 0) and a != b
    for cid in (a, b, ids.derived_order_id("u", a, "1.5"), ids.intent_id("sig-1")):
        assert ids.is_valid(cid) and len(cid) <= 32
    assert not ids.is_valid("has-dash") and not ids.is_valid("x" * 33)
    with pytest.raises(ValueError):
        ids.derived_order_id("uu", a)


def test_position_realises_pnl_on_reduce_and_flip() -> None:
    p = PositionBook(venue="bybit", symbol="BTCUSDT")
    assert p.apply("buy", 2.0, 100.0, 0.1) == 0.0
    assert p.apply("sell", 1.0, 110.0, 0.1) == pytest.approx(10.0)
    assert p.qty == 1.0 and p.entry_price == 100.0
    assert p.apply("sell", 3.0, 90.0, 0.0) == pytest.approx(-10.0)
    assert p.qty == pytest.approx(-2.0) and p.entry_price == 90.0
    assert p.fees_usd == pytest.approx(0.2)
    with pytest.raises(ValueError):
        p.apply("buy", float("nan"), 100.0, 0.0)


def test_ledger_applies_each_fill_once_and_charges_funding_once() -> None:
    ledger = Ledger()
    fill = Fill(
        ts_ms=T,
        fill_id="c1:1",
        client_order_id="c1",
        intent_id="i",
        venue="bybit",
        symbol="BTCUSDT",
        side="buy",
        qty=1.0,
        price=100.0,
        fee_usd=0.05,
    )
    ledger.apply_fill(fill)
    assert ledger.new_fill_qty("c1", 1.0) == 0.0 and ledger.new_fill_qty("c1", 1.5) == 0.5
    paid = ledger.apply_funding("bybit", "BTCUSDT", 0.0001, 100.0, T + 1, T + 1)
    assert paid is not None
    payment, position = paid
    assert payment.amount_usd == pytest.approx(-0.01)  # a long pays a positive rate
    assert position.funding_usd == pytest.approx(-0.01)
    assert ledger.apply_funding("bybit", "BTCUSDT", 0.0001, 100.0, T + 1, T + 2) is None
    assert ledger.apply_funding("okx", "BTCUSDT", 0.0001, 100.0, T + 1, T + 2) is None
    book = RouterBook(ledger=ledger)
    book.orders["c1"] = OrderRecord(
        client_order_id="c1", intent_id="i", venue="bybit", symbol="BTCUSDT", side="buy", qty=1
    )
    again = RouterBook.decode(book.encode())
    assert again.ledger.applied == {"c1": 1.0} and again.unsettled()[0].client_order_id == "c1"


def _paper(clock: SimClock) -> PaperVenue:
    venue = PaperVenue("bybit", clock, PaperConfig(taker_fee_bps=5.0, slippage_bps=0.0))
    venue.on_book(
        BookTop(
            ts_ms=clock.now_ms(),
            venue="bybit",
            symbol="BTCUSDT",
            bids=[BookLevel(99.0, 1.0), BookLevel(98.0, 10.0)],
            asks=[BookLevel(101.0, 1.0), BookLevel(101.2, 1.0), BookLevel(150.0, 100.0)],
        )
    )
    return venue


async def test_paper_market_order_walks_the_book_within_the_slippage_band() -> None:
    clock = SimClock(T)
    venue = _paper(clock)
    result = await venue.create_order("BTCUSDT", "buy", 1.5, "A1")
    assert result.status == "filled"
    assert result.avg_price == pytest.approx((101.0 + 0.5 * 101.2) / 1.5)
    assert result.fee_usd == pytest.approx(1.5 * result.avg_price * 5e-4)
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order("BTCUSDT", "buy", 1.0, "A1")
    # the 150 level is far outside the 50 bp band: the rest is cancelled
    thin = await venue.create_order("BTCUSDT", "buy", 5.0, "A2")
    assert thin.status == "canceled" and thin.filled_qty == pytest.approx(0.5)
    assert thin.avg_price == pytest.approx(101.2)  # the first order took the 101.0 level
    with pytest.raises(OrderRejected, match="would open"):
        await venue.create_order("BTCUSDT", "buy", 1.0, "A3", reduce_only=True)
    closing = await venue.create_order("BTCUSDT", "sell", 10.0, "A4", reduce_only=True)
    assert closing.qty == pytest.approx(2.0)  # capped at the position
    assert closing.filled_qty == pytest.approx(1.0)  # the 98 bid is outside the band
    clock.advance(60_000)
    with pytest.raises(OrderRejected, match="stale"):
        await venue.create_order("BTCUSDT", "sell", 1.0, "A5")


def _state(state: str, since: int = T) -> RiskState:
    return RiskState(
        ts_ms=T,
        state=state,
        reason="",
        seq=1,
        equity_usd=1.0,
        high_water_usd=1.0,
        drawdown_frac=0.0,
        since_ms=since,
    )


def test_gate_needs_a_fresh_active_state_and_honours_the_latch() -> None:
    gate = RiskGate(max_age_ms=1000)
    assert gate.refusal(False, T) == "no risk state received"
    gate.on_state(_state("ACTIVE"), T)
    assert gate.refusal(False, T + 500) is None
    assert "stale" in (gate.refusal(False, T + 1500) or "")
    gate.on_state(_state("REDUCING"), T + 2000)
    assert gate.refusal(True, T + 2000) is None
    assert gate.refusal(False, T + 2000) == "risk state REDUCING"
    gate.latch(T + 3000)
    gate.on_state(_state("ACTIVE", since=T), T + 3000)  # older than the latch: still halted
    assert "HALTED" in (gate.refusal(False, T + 3000) or "")
    gate.on_state(_state("ACTIVE", since=T + 4000), T + 4000)
    assert gate.refusal(False, T + 4000) is None


async def test_the_gate_waits_only_when_its_state_is_missing_or_stale_and_not_latched() -> None:
    gate = RiskGate(max_age_ms=1000)
    # nothing heard: waits until the next state arrives, not for the whole timeout
    later = asyncio.get_running_loop().call_later(0.05, gate.on_state, _state("ACTIVE"), T)
    await asyncio.wait_for(gate.wait_fresh(T, timeout_s=30.0), 5.0)
    later.cancel()
    assert gate.refusal(False, T) is None
    # fresh: no wait at all
    await asyncio.wait_for(gate.wait_fresh(T + 500, timeout_s=30.0), 0.5)
    # stale and nothing comes: the wait ends at its timeout and the refusal stands
    await gate.wait_fresh(T + 5000, timeout_s=0.05)
    assert "stale" in (gate.refusal(False, T + 5000) or "")
    # latched HALTED: nothing to wait for, the latch decides
    gate.latch(T + 6000)
    await asyncio.wait_for(gate.wait_fresh(T + 9000, timeout_s=30.0), 0.5)
    assert "HALTED" in (gate.refusal(False, T + 9000) or "")


def test_spot_and_perp_of_one_symbol_are_two_positions_and_spot_pays_no_funding() -> None:
    ledger = Ledger()
    common = dict(ts_ms=T, intent_id="i", venue="bybit", symbol="BTCUSDT", fee_usd=0.0)
    ledger.apply_fill(
        Fill(fill_id="p:1", client_order_id="p", side="sell", qty=1.0, price=100.0, **common)
    )
    spot = ledger.apply_fill(
        Fill(
            fill_id="s:1",
            client_order_id="s",
            side="buy",
            qty=1.0,
            price=99.0,
            instrument="spot",
            **common,
        )
    )
    assert spot.instrument == "spot" and spot.qty == 1.0
    assert set(ledger.positions) == {"bybit:BTCUSDT", "bybit:BTCUSDT:spot"}
    assert position_key("bybit", "BTCUSDT") == "bybit:BTCUSDT"
    assert split_key("bybit:BTCUSDT:spot") == ("bybit", "BTCUSDT", "spot")
    assert split_key("bybit:BTCUSDT") == ("bybit", "BTCUSDT", "perp")
    assert ledger.qty("bybit", "BTCUSDT") == -1.0 and ledger.qty("bybit", "BTCUSDT", "spot") == 1.0
    paid = ledger.apply_funding("bybit", "BTCUSDT", 0.0001, 100.0, T + 1, T + 1)
    assert paid is not None and paid[0].amount_usd == pytest.approx(0.01)  # the short receives
    assert ledger.positions["bybit:BTCUSDT:spot"].funding_usd == 0.0
    assert [p.instrument for p in ledger.open_positions("spot")] == ["spot"]
    again = RouterBook.decode(RouterBook(ledger=ledger).encode())
    assert again.ledger.positions["bybit:BTCUSDT:spot"].instrument == "spot"


async def test_paper_spot_fills_at_the_index_with_spot_fees_and_never_sells_short() -> None:
    clock = SimClock(T)
    spot = PaperVenue(
        "bybit",
        clock,
        PaperConfig(taker_fee_bps=10.0, slippage_bps=1.0, half_spread_bps=2.0),
        instrument="spot",
    )
    with pytest.raises(OrderRejected, match="no order book"):
        await spot.create_order("BTCUSDT", "buy", 1.0, "a")
    spot.on_index(PriceTick(ts_ms=T, venue="bybit", symbol="BTCUSDT", mark=101.0, index=100.0))
    bought = await spot.create_order("BTCUSDT", "buy", 3.0, "b")
    assert bought.status == "filled" and bought.filled_qty == 3.0
    assert bought.avg_price == pytest.approx(100.0 * 1.0002 * 1.0001)
    assert bought.fee_usd == pytest.approx(3.0 * bought.avg_price * 0.001)
    with pytest.raises(OrderRejected, match="insufficient balance: spot sell of 4"):
        await spot.create_order("BTCUSDT", "sell", 4.0, "c")
    sold = await spot.create_order("BTCUSDT", "sell", 3.0, "d")
    assert sold.avg_price == pytest.approx(100.0 * 0.9998 * 0.9999)
    assert spot.positions["BTCUSDT"] == 0.0
    spot.on_index(
        PriceTick(ts_ms=T, venue="bybit", symbol="BTCUSDT", mark=101.0, index=100.0, stale=True)
    )
    with pytest.raises(OrderRejected, match="stale"):
        await spot.create_order("BTCUSDT", "buy", 1.0, "e")
