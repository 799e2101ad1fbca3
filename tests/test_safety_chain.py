"""The safety chain over a real nats-server: risk-killswitch and order-router in process.

Market data comes from a feeder publishing order books on NATS; signals and scripted
positions are published as the strategy engine and the router would. Live-path tests use a
small venue client that keeps orders by client order id (and refuses duplicates as venues
do), fails on cue or hangs mid-send, so that unwinding and crash recovery are observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import httpx
import pytest

from hean.bus.nats import NatsBus
from hean.cli.main import main as hean_main
from hean.config import free_port
from hean.execution import ids
from hean.venues.base import (
    DuplicateClientOrderId,
    OrderNotFound,
    OrderRejected,
    OrderResult,
    VenuePosition,
)
from hean_proto import codec
from hean_proto.events import (
    BookLevel,
    BookTop,
    ControlCommand,
    Event,
    Fill,
    IntentLeg,
    OrderIntent,
    OrderUpdate,
    Position,
    RiskDecision,
    RiskState,
    Signal,
    SignalLeg,
)
from hean_proto.subjects import msg_id_for, subject_for
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main
from tests.service_helpers import Tap, of, running

TOKEN = "s3cret-operator-token"
PRICES = {"bybit": 100.0, "binance": 100.2}
_ids = itertools.count()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def risk_settings(url: str, tmp_path, **over) -> risk_main.Settings:
    return risk_main.Settings(
        nats_url=url,
        health_port=free_port(),
        state_dir=str(tmp_path),
        risk_token=TOKEN,
        state_publish_s=0.2,
        persist_s=0.5,
        heartbeat_s=5.0,
        **over,
    )


def router_settings(url: str, tmp_path, **over) -> router_main.Settings:
    values = dict(
        nats_url=url,
        health_port=free_port(),
        state_dir=str(tmp_path),
        venues=["bybit", "binance"],
        risk_max_age_s=1.0,
        leg_fill_timeout_s=1.0,
        lookup_delay_s=0.05,
        order_timeout_s=2.0,
        stop_grace_s=0.2,
        heartbeat_s=5.0,
    )
    values.update(over)
    return router_main.Settings(**values)


class Feed:
    """Publishes events, and fresh order books for every venue in the background."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self.task: asyncio.Task | None = None

    async def publish(self, event: Event, subject: str | None = None) -> None:
        await self.bus.publish(
            subject or subject_for(event), codec.encode(event), msg_id=msg_id_for(event)
        )

    async def books(self) -> None:
        while True:
            t = now_ms()
            for venue, mid in PRICES.items():
                await self.publish(
                    BookTop(
                        ts_ms=t,
                        venue=venue,
                        symbol="BTCUSDT",
                        bids=[BookLevel(mid - 0.05, 5.0), BookLevel(mid - 0.15, 50.0)],
                        asks=[BookLevel(mid + 0.05, 5.0), BookLevel(mid + 0.15, 50.0)],
                    )
                )
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self.task = asyncio.create_task(self.books())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def harness(url: str):
    bus = await NatsBus.connect(url, "test-feed")
    await bus.ensure_streams()
    feed = Feed(bus)
    tap = Tap()
    await tap.start(url)
    feed.start()
    try:
        yield feed, tap
    finally:
        await feed.stop()
        await tap.close()
        await bus.close()


def signal(**over) -> Signal:
    values = dict(
        ts_ms=now_ms(),
        id=f"sig-{next(_ids)}-{time.time_ns()}",
        strategy="funding_arb",
        symbol="BTCUSDT",
        legs=[
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy"),
            SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
        ],
        size_frac=0.01,
        confidence=0.8,
        stop_loss_frac=0.05,
    )
    values.update(over)
    return Signal(**values)


def one_leg_intent(sid: str) -> OrderIntent:
    """An intent as risk would approve it, published directly to the router."""
    return OrderIntent(
        ts_ms=now_ms(),
        id=ids.intent_id(sid),
        signal_id=sid,
        strategy="funding_arb",
        symbol="BTCUSDT",
        legs=[
            IntentLeg(
                client_order_id=ids.leg_order_id(sid, 0),
                venue="bybit",
                symbol="BTCUSDT",
                side="buy",
                qty=0.5,
                notional_usd=50.0,
            )
        ],
    )


async def active(tap: Tap, rs: risk_main.Settings, ro: router_main.Settings | None = None):
    """Risk is ACTIVE and has seen both venues' books; the router (if any) heard it."""
    await tap.until(of(RiskState, state="ACTIVE"))

    async def risk_ready(http: httpx.AsyncClient) -> bool:
        doc = (await http.get(f"http://127.0.0.1:{rs.health_port}/risk/state")).json()
        return set(doc["venues_seen_ms"]) >= set(PRICES)

    async def router_ready(http: httpx.AsyncClient) -> bool:
        if ro is None:
            return True
        doc = (await http.get(f"http://127.0.0.1:{ro.health_port}/status")).json()
        return doc["state"]["risk_state"] == "ACTIVE" and not doc["state"]["risk_latched_halt"]

    async with httpx.AsyncClient() as http:
        for _ in range(200):
            if await risk_ready(http) and await router_ready(http):
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the chain never became ready to trade")


def cli(*argv: str) -> int:
    return hean_main(list(argv))


@dataclass
class ScriptedVenue:
    """Orders kept by client order id; duplicates refused as the real venues refuse them."""

    venue: str
    reject: bool = False
    hang_once: bool = False
    fill_price: float = 100.0
    orders: dict[str, OrderResult] = field(default_factory=dict)
    creates: int = 0
    cancelled: list[str] = field(default_factory=list)
    hung: asyncio.Event = field(default_factory=asyncio.Event)

    def rest(self, cid: str, symbol: str = "BTCUSDT") -> None:
        self.orders[cid] = OrderResult(
            venue=self.venue,
            symbol=symbol,
            client_order_id=cid,
            venue_order_id=f"v{len(self.orders)}",
            side="buy",
            qty=1.0,
            status="open",
        )

    async def create_order(
        self, symbol, side, qty, client_order_id, *, price=None, reduce_only=False
    ):
        self.creates += 1
        if client_order_id in self.orders:
            raise DuplicateClientOrderId(self.venue, "create_order", "duplicate clOrdId")
        if self.reject:
            raise OrderRejected(self.venue, "create_order", "insufficient margin")
        result = OrderResult(
            venue=self.venue,
            symbol=symbol,
            client_order_id=client_order_id,
            venue_order_id=f"v{len(self.orders)}",
            side=side,
            qty=qty,
            status="filled",
            filled_qty=qty,
            avg_price=self.fill_price,
            fee_usd=qty * self.fill_price * 0.0005,
            ts_ms=now_ms(),
        )
        self.orders[client_order_id] = result
        if self.hang_once:
            self.hang_once = False
            self.hung.set()
            await asyncio.Event().wait()  # the answer never comes back
        return result

    async def fetch_order(self, symbol, client_order_id):
        try:
            return self.orders[client_order_id]
        except KeyError:
            raise OrderNotFound(self.venue, "fetch_order", client_order_id) from None

    async def cancel_order(self, symbol, client_order_id):
        order = await self.fetch_order(symbol, client_order_id)
        if order.status == "open":
            self.cancelled.append(client_order_id)
            order = OrderResult(**{**_fields(order), "status": "canceled"})
            self.orders[client_order_id] = order
        return order

    async def fetch_open_orders(self, symbol=None):
        return [o for o in self.orders.values() if o.status in ("open", "partially_filled")]

    async def fetch_positions(self):
        held: dict[str, float] = {}
        for o in self.orders.values():
            held[o.symbol] = held.get(o.symbol, 0.0) + (
                o.filled_qty if o.side == "buy" else -o.filled_qty
            )
        return [VenuePosition(venue=self.venue, symbol=s, qty=q) for s, q in held.items() if q]

    async def close(self) -> None:
        return None


def _fields(order: OrderResult) -> dict:
    return {f: getattr(order, f) for f in order.__struct_fields__}


# ---------------------------------------------------------------------------------- tests


async def test_approved_two_leg_intent_fills_on_paper(nats_url: str, tmp_path) -> None:
    rs, ro = risk_settings(nats_url, tmp_path), router_settings(nats_url, tmp_path)
    async with (
        harness(nats_url) as (feed, tap),
        running(risk_main.build(rs), rs),
        running(router_main.build(ro), ro),
    ):
        await active(tap, rs, ro)
        sig = signal()
        await feed.publish(sig)
        decision = (await tap.until(of(RiskDecision, signal_id=sig.id)))[0]
        assert decision.approved, decision.reasons
        intent = (await tap.until(of(OrderIntent, signal_id=sig.id)))[0]
        assert [leg.client_order_id for leg in intent.legs] == [
            ids.leg_order_id(sig.id, 0),
            ids.leg_order_id(sig.id, 1),
        ]
        assert all(ids.is_valid(leg.client_order_id) for leg in intent.legs)
        # decided from the signal's live copy, the stored copy only confirming it
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{rs.health_port}/metrics")).text
        assert (
            'hean_messages_handled_early{consumer="risk_killswitch",service="risk-killswitch"} 1.0'
            in metrics
        )
        # 1 % of 10 000 USD per leg
        assert intent.legs[0].notional_usd == pytest.approx(100.0)
        fills = await tap.until(
            lambda ev: len(of(Fill, intent_id=intent.id)(ev)) >= 2 and of(Fill)(ev)
        )
        by_venue = {f.venue: f for f in fills}
        assert by_venue["bybit"].side == "buy" and by_venue["binance"].side == "sell"
        # walked the book: best ask plus 1 bp slippage; taker fee 5.5 bp
        assert by_venue["bybit"].price == pytest.approx(100.05 * 1.0001)
        assert by_venue["bybit"].fee_usd == pytest.approx(
            by_venue["bybit"].qty * by_venue["bybit"].price * 5.5e-4
        )
        assert all(f.paper for f in fills)
        positions = await tap.until(
            lambda ev: (
                {p.venue for p in of(Position, symbol="BTCUSDT")(ev)} >= {"bybit", "binance"}
                and of(Position, symbol="BTCUSDT")(ev)
            )
        )
        last = {p.venue: p for p in positions}
        assert last["bybit"].qty == pytest.approx(intent.legs[0].qty)
        assert last["binance"].qty == pytest.approx(-intent.legs[1].qty)

        out = await asyncio.to_thread(_capture, "positions", "--nats", nats_url)
        assert "bybit" in out and "BTCUSDT" in out and "binance" in out
        out = await asyncio.to_thread(_capture, "pnl", "--nats", nats_url)
        assert "fees_usd" in out and "net_usd" in out


def _capture(*argv: str) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli(*argv)
    assert code == 0, buf.getvalue()
    return buf.getvalue()


async def test_oversize_and_low_confidence_signals_rejected_with_reasons(
    nats_url: str, tmp_path
) -> None:
    rs = risk_settings(nats_url, tmp_path)
    async with harness(nats_url) as (feed, tap), running(risk_main.build(rs), rs):
        await active(tap, rs)
        big = signal(size_frac=0.05)
        timid = signal(confidence=0.4)
        naked = signal(stop_loss_frac=None)
        for s in (big, timid, naked):
            await feed.publish(s)
        for s, expected in (
            (big, "size 5.00% of capital > limit 2.00%"),
            (timid, "confidence 0.40 < 0.60"),
            (naked, "no stop-loss"),
        ):
            decision = (await tap.until(of(RiskDecision, signal_id=s.id)))[0]
            assert not decision.approved
            assert expected in decision.reasons, decision.reasons
        assert not of(OrderIntent)(tap.events)
        # unknown market: fail closed
        odd = signal(legs=[SignalLeg(venue="okx", symbol="BTCUSDT", side="buy")])
        await feed.publish(odd)
        decision = (await tap.until(of(RiskDecision, signal_id=odd.id)))[0]
        assert not decision.approved
        assert any("okx" in r for r in decision.reasons)


async def test_drawdown_halts_latches_across_restarts_until_resume(nats_url: str, tmp_path) -> None:
    venues = {"bybit": ScriptedVenue("bybit"), "binance": ScriptedVenue("binance")}
    venues["bybit"].rest("Hresting0000000000000000000000L00")
    rs = risk_settings(nats_url, tmp_path)
    ro = router_settings(nats_url, tmp_path, live=True)

    def router():
        return router_main.build(ro, client_factory=lambda v, s: venues[v])

    async with harness(nats_url) as (feed, tap):
        async with running(risk_main.build(rs), rs), running(router(), ro):
            await active(tap, rs, ro)
            # the router reports a realised loss of 25 % of capital on another book
            await feed.publish(
                Position(
                    ts_ms=now_ms(),
                    venue="bybit",
                    symbol="ETHUSDT",
                    qty=0.0,
                    realized_usd=-2500.0,
                )
            )
            halted = (await tap.until(of(RiskState, state="HALTED")))[0]
            assert "drawdown 25.0%" in halted.reason
            cmd = (await tap.until(of(ControlCommand, command="cancel_all")))[0]
            assert cmd.issued_by == "risk-killswitch"
            await tap.until(
                of(
                    OrderUpdate,
                    client_order_id="Hresting0000000000000000000000L00",
                    status="canceled",
                )
            )
            assert venues["bybit"].cancelled == ["Hresting0000000000000000000000L00"]
            late = signal()
            await feed.publish(late)
            decision = (await tap.until(of(RiskDecision, signal_id=late.id)))[0]
            assert not decision.approved and "HALTED" in decision.reasons[0]

        # every service restarted: the latch holds
        tap.events.clear()
        rs2 = risk_settings(nats_url, tmp_path)
        ro.health_port = free_port()
        async with running(risk_main.build(rs2), rs2), running(router(), ro):
            await tap.until(of(RiskState, state="HALTED"))
            again = signal()
            await feed.publish(again)
            decision = (await tap.until(of(RiskDecision, signal_id=again.id)))[0]
            assert not decision.approved and "HALTED" in decision.reasons[0]

            code = await asyncio.to_thread(
                cli, "risk", "resume", "--nats", nats_url, "--token", "wrong"
            )
            assert code != 0
            status = await asyncio.to_thread(_capture, "risk", "status", "--nats", nats_url)
            assert "HALTED" in status

            code = await asyncio.to_thread(
                cli, "risk", "resume", "--nats", nats_url, "--token", TOKEN, "--reason", "checked"
            )
            assert code == 0
            await active(tap, rs2, ro)
            fresh = signal()
            await feed.publish(fresh)
            decision = (await tap.until(of(RiskDecision, signal_id=fresh.id)))[0]
            assert decision.approved, decision.reasons
            await tap.until(lambda ev: len(of(Fill, intent_id=decision.intent_id)(ev)) == 2)


async def test_silent_risk_service_stops_new_orders(nats_url: str, tmp_path) -> None:
    rs, ro = risk_settings(nats_url, tmp_path), router_settings(nats_url, tmp_path)
    async with harness(nats_url) as (feed, tap), running(router_main.build(ro), ro):
        async with running(risk_main.build(rs), rs):
            await active(tap, rs)
        # risk is gone; its last ACTIVE state ages past risk_max_age_s
        await asyncio.sleep(ro.risk_max_age_s + 0.3)
        intent = one_leg_intent(f"direct-{time.time_ns()}")
        await feed.publish(intent)
        update = (await tap.until(of(OrderUpdate, intent_id=intent.id)))[0]
        assert update.status == "rejected"
        assert "risk state stale" in update.reason
        await asyncio.sleep(0.3)
        assert not of(Fill)(tap.events)


async def test_an_intent_ahead_of_risks_state_waits_for_it_and_is_refused_without_it(
    nats_url: str, tmp_path
) -> None:
    """An intent that reaches the router before risk's state does (the router has just
    started, or risk has just restarted after a silence) waits for the next state, at most
    ``risk_max_age_s``, instead of being refused for a gap in the router's hearing; with no
    state by then it is refused, fail closed."""
    rs = risk_settings(nats_url, tmp_path)
    async with harness(nats_url) as (feed, tap):
        ro = router_settings(nats_url, tmp_path, risk_max_age_s=1.0)
        async with running(router_main.build(ro), ro):
            alone = one_leg_intent(f"alone-{time.time_ns()}")
            await feed.publish(alone)
            update = (await tap.until(of(OrderUpdate, intent_id=alone.id)))[0]
            assert update.status == "rejected" and update.reason.endswith("no risk state received")

        ro = router_settings(nats_url, tmp_path, risk_max_age_s=2.5)
        async with running(router_main.build(ro), ro):
            for when in ("before risk's first state", "after risk was silent"):
                intent = one_leg_intent(f"ahead-{time.time_ns()}")
                await feed.publish(intent)
                await asyncio.sleep(0.5)  # the router holds it: risk is not up
                assert not of(OrderUpdate, intent_id=intent.id)(tap.events), when
                async with running(risk_main.build(rs), rs):
                    fill = (await tap.until(of(Fill, intent_id=intent.id)))[0]
                    assert fill.qty == 0.5 and fill.paper, when
                rs.health_port = free_port()
                await asyncio.sleep(ro.risk_max_age_s + 0.3)  # its last state is now stale


async def test_an_intent_held_by_a_router_that_died_is_executed_by_its_restart(
    nats_url: str, tmp_path
) -> None:
    """A router that took an intent and died without answering holds it for the intent ack
    wait; the restart then executes it, well inside the intent's maximum age."""
    import nats

    rs = risk_settings(nats_url, tmp_path)
    ro = router_settings(nats_url, tmp_path, intent_ack_wait_s=1.0)
    async with harness(nats_url) as (feed, tap), running(risk_main.build(rs), rs):
        async with running(router_main.build(ro), ro):
            await active(tap, rs, ro)  # the router's consumer exists, with its ack wait
        held = one_leg_intent(f"held-{time.time_ns()}")
        await feed.publish(held)
        dying = await nats.connect(nats_url)
        psub = await dying.jetstream().pull_subscribe_bind(
            durable="order_router", stream="HEAN_TRADING"
        )
        assert [codec.decode(m.data) for m in await psub.fetch(1, timeout=5)] == [held]
        await dying.close()  # the intent was received and never answered

        ro.health_port = free_port()
        async with running(router_main.build(ro), ro):
            fill = (await tap.until(of(Fill, intent_id=held.id), timeout=15))[0]
        assert fill.qty == 0.5
        updates = of(OrderUpdate, intent_id=held.id)(tap.events)
        assert not [u for u in updates if u.status == "rejected"], updates


async def test_one_leg_failure_is_unwound(nats_url: str, tmp_path) -> None:
    venues = {"bybit": ScriptedVenue("bybit"), "binance": ScriptedVenue("binance", reject=True)}
    rs = risk_settings(nats_url, tmp_path)
    ro = router_settings(nats_url, tmp_path, live=True)
    app = router_main.build(ro, client_factory=lambda v, s: venues[v])
    async with (
        harness(nats_url) as (feed, tap),
        running(risk_main.build(rs), rs),
        running(app, ro),
    ):
        await active(tap, rs, ro)
        sig = signal()
        await feed.publish(sig)
        decision = (await tap.until(of(RiskDecision, signal_id=sig.id)))[0]
        assert decision.approved, decision.reasons
        long_leg = ids.leg_order_id(sig.id, 0)
        unwound = (await tap.until(of(OrderUpdate, client_order_id=long_leg, status="unwound")))[0]
        assert "binance" in unwound.reason and "insufficient margin" in unwound.reason
        rejected = (
            await tap.until(
                of(OrderUpdate, client_order_id=ids.leg_order_id(sig.id, 1), status="rejected")
            )
        )[0]
        assert rejected.venue == "binance"
        flat = await tap.until(
            lambda ev: [p for p in of(Position, venue="bybit")(ev) if p.qty == 0]
        )
        assert flat
        sides = sorted((o.side, o.filled_qty) for o in venues["bybit"].orders.values())
        assert len(sides) == 2 and sides[0][1] == sides[1][1]
        assert {s for s, _ in sides} == {"buy", "sell"}


async def test_crash_between_send_and_record_leaves_exactly_one_order(
    nats_url: str, tmp_path
) -> None:
    venues = {"bybit": ScriptedVenue("bybit", hang_once=True), "binance": ScriptedVenue("binance")}
    rs = risk_settings(nats_url, tmp_path)
    ro = router_settings(nats_url, tmp_path, live=True)

    def router():
        return router_main.build(ro, client_factory=lambda v, s: venues[v])

    sid = f"crash-{time.time_ns()}"
    cid = ids.leg_order_id(sid, 0)

    def make_intent() -> OrderIntent:
        return one_leg_intent(sid)

    async with harness(nats_url) as (feed, tap), running(risk_main.build(rs), rs):
        await active(tap, rs)
        async with running(router(), ro):
            await active(tap, rs, ro)
            await feed.publish(make_intent())
            await asyncio.wait_for(venues["bybit"].hung.wait(), 10)
            await tap.until(of(OrderUpdate, client_order_id=cid, status="in_flight"))
        # the router died with the order sent and its answer unrecorded
        assert venues["bybit"].creates == 1
        assert not of(Fill)(tap.events)
        ro.health_port = free_port()
        async with running(router(), ro):
            fill = (await tap.until(of(Fill, client_order_id=cid)))[0]
            assert fill.qty == 0.5
            await tap.until(of(OrderUpdate, client_order_id=cid, status="filled"))
            # the same intent delivered again (a replay outside the dedupe window)
            replay = make_intent()
            await feed.bus.js.publish(subject_for(replay), codec.encode(replay))
            await asyncio.sleep(0.5)
        assert venues["bybit"].creates == 1
        assert list(venues["bybit"].orders) == [cid]
        assert len(of(Fill, client_order_id=cid)(tap.events)) == 1
