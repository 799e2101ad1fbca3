"""The order-router trading live against the exchange simulator over a real nats-server.

The chain is the production one: funding-collector polls the simulator through the real ccxt
clients, risk-killswitch checks signals against that market data, and the router (``live``,
``venue_mode=sim``) sends signed orders with client order ids that the simulator keeps per
account and refuses to accept twice. Where an answer has to go missing, a small HTTP relay sits
between the router and the simulator: it forwards every request untouched and, on cue, swallows
the answer to an order the simulator has already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import yarl
from aiohttp import web
from service_helpers import Tap, of, running

from hean.config import free_port, load_settings
from hean.execution import ids
from hean.sim import SimServer
from hean.sim.scenario import Scenario, SymbolSpec
from hean_proto.events import (
    Alert,
    Fill,
    FundingPayment,
    OrderIntent,
    OrderUpdate,
    Position,
    RiskDecision,
    RiskState,
    Signal,
    SignalLeg,
)
from hean_proto.subjects import msg_id_for, subject_for
from hean_services.funding_collector.main import Settings as CollectorSettings
from hean_services.funding_collector.main import build as build_collector
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main

VENUES = ["bybit", "binance"]
KEY = "sim-key"
CREATE_PATHS = {
    ("bybit", "/bybit/v5/order/create"),
    ("binance", "/binance/fapi/v1/order"),
    ("okx", "/okx/api/v5/trade/order"),
}
_ids = itertools.count()


def scenario() -> Scenario:
    return Scenario(
        seed=11,
        symbols=[
            SymbolSpec(
                base="BTC",
                price=65_000.0,
                daily_vol=0.01,
                venues={"bybit": 8.0, "binance": 8.0, "okx": 8.0},
            )
        ],
    )


@dataclass
class Relay:
    """Forwards every request to the simulator; can swallow the answer to one venue's orders."""

    target: str
    hold: set[str] = field(default_factory=set)
    creates: dict[str, int] = field(default_factory=dict)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        venue = request.path.split("/")[1]
        is_create = request.method == "POST" and (venue, request.path) in CREATE_PATHS
        if is_create:
            self.creates[venue] = self.creates.get(venue, 0) + 1
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        url = yarl.URL(self.target + request.path_qs, encoded=True)
        async with self._http.request(
            request.method, url, headers=headers, data=await request.read()
        ) as r:
            body = await r.read()
            status, ctype = r.status, r.headers.get("Content-Type", "application/json")
        if is_create and venue in self.hold:
            # the simulator has the order; its answer never reaches the router
            self.hold.discard(venue)
            self.held.set()
            await self.release.wait()
        return web.Response(body=body, status=status, headers={"Content-Type": ctype})

    async def __aenter__(self) -> Relay:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._http is not None
        self.release.set()
        await self._runner.cleanup()
        await self._http.close()


SPOT_HEDGE = [
    SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
    SignalLeg(venue="binance", symbol="BTCUSDT", side="buy", instrument="spot"),
]
"""A Binance perp short hedged by a spot long."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signal(**over) -> Signal:
    values = dict(
        ts_ms=now_ms(),
        id=f"live-{next(_ids)}-{time.time_ns()}",
        strategy="funding_arb",
        symbol="BTCUSDT",
        legs=[
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy"),
            SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
        ],
        size_frac=0.02,
        confidence=0.8,
        stop_loss_frac=0.05,
    )
    values.update(over)
    return Signal(**values)


@dataclass
class Chain:
    sim: SimServer
    tap: Tap
    nats_url: str
    tmp_path: object
    rs: risk_main.Settings
    pub: object = None

    def router_settings(self, sim_url: str, **over) -> router_main.Settings:
        values = dict(
            nats_url=self.nats_url,
            health_port=free_port(),
            state_dir=str(self.tmp_path),
            venues=VENUES,
            venue_mode="sim",
            sim_url=sim_url,
            live=True,
            risk_max_age_s=2.0,
            leg_fill_timeout_s=2.0,
            lookup_delay_s=0.05,
            order_timeout_s=3.0,
            stop_grace_s=0.2,
            heartbeat_s=5.0,
            payments_poll_s=0.5,
        )
        values.update(over)
        return router_main.Settings(**values)

    async def publish(self, sig: Signal) -> None:
        await self.pub.publish(subject_for(sig), _encode(sig), msg_id=msg_id_for(sig))

    def account(self, venue: str):
        return self.sim.engine.accounts[(venue, KEY)]

    def orders(self, venue: str, cid: str) -> list:
        return [o for o in self.account(venue).orders.values() if o.client_id == cid]

    async def trade(self, sig: Signal) -> tuple[OrderIntent, list[Fill]]:
        """Publish a two-leg signal; once risk approved it and both legs filled, its intent
        and fills."""
        await self.publish(sig)
        decision = (await self.tap.until(of(RiskDecision, signal_id=sig.id)))[0]
        assert decision.approved, decision.reasons
        intent = (await self.tap.until(of(OrderIntent, signal_id=sig.id)))[0]
        fills = await self.tap.until(
            lambda ev: len(of(Fill, intent_id=intent.id)(ev)) >= 2 and of(Fill)(ev)
        )
        return intent, fills

    async def ready(self, ro: router_main.Settings) -> None:
        """Risk is ACTIVE with fresh books from both venues; the router heard it."""
        await self.tap.until(of(RiskState, state="ACTIVE"))
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                async with http.get(f"http://127.0.0.1:{self.rs.health_port}/risk/state") as r:
                    risk = await r.json()
                async with http.get(f"http://127.0.0.1:{ro.health_port}/status") as r:
                    router = (await r.json())["state"]
                if set(risk["venues_seen_ms"]) >= set(VENUES) and router["risk_state"] == "ACTIVE":
                    return
                await asyncio.sleep(0.05)
        raise AssertionError("the chain never became ready to trade")


def _encode(event) -> bytes:
    from hean_proto import codec

    return codec.encode(event)


@contextlib.asynccontextmanager
async def chain(nats_url: str, tmp_path) -> AsyncIterator[Chain]:
    """Simulator, collector and risk running; the router is started by each test."""
    from hean.bus.nats import NatsBus

    async with SimServer(scenario()) as sim:
        collector = load_settings(
            CollectorSettings,
            "funding-collector",
            env={},
            nats_url=nats_url,
            venue_mode="sim",
            sim_url=sim.url,
            venues=VENUES,
            collect_symbols=["BTCUSDT"],
            collect_liquidations=False,
            funding_poll_s=1.0,
            price_poll_s=0.5,
            book_poll_s=0.5,
            oi_poll_s=60.0,
            tick_s=0.5,
            heartbeat_s=5.0,
            state_dir=str(tmp_path),
            health_port=free_port(),
        )
        rs = risk_main.Settings(
            nats_url=nats_url,
            health_port=free_port(),
            state_dir=str(tmp_path),
            risk_token="operator-token",
            capital_usd=100_000.0,
            state_publish_s=0.2,
            persist_s=0.5,
            heartbeat_s=5.0,
        )
        pub = await NatsBus.connect(nats_url, "test-signals")
        await pub.ensure_streams()
        tap = Tap()
        await tap.start(nats_url)
        try:
            async with (
                running(build_collector(collector), collector),
                running(risk_main.build(rs), rs),
            ):
                yield Chain(sim, tap, nats_url, tmp_path, rs, pub)
        finally:
            await tap.close()
            await pub.close()


# ---------------------------------------------------------------------------------- tests


async def test_two_leg_signal_fills_at_the_simulator(nats_url: str, tmp_path) -> None:
    async with chain(nats_url, tmp_path) as c:
        ro = c.router_settings(c.sim.url)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            intent, fills = await c.trade(signal())
            positions = await c.tap.until(
                lambda ev: (
                    {p.venue for p in of(Position, symbol="BTCUSDT")(ev) if p.qty} >= set(VENUES)
                    and of(Position, symbol="BTCUSDT")(ev)
                )
            )
            await asyncio.sleep(0.5)  # any late duplicate would show now
        by_venue = {f.venue: f for f in fills}
        assert not any(f.paper for f in fills)
        for leg, sign in zip(intent.legs, (1, -1), strict=True):
            orders = c.orders(leg.venue, leg.client_order_id)
            assert len(orders) == 1, orders  # exactly one order per client order id
            order = orders[0]
            assert order.status == "FILLED" and order.side == leg.side
            # the venue fills what its lot size allows of the intended quantity
            assert leg.qty * 0.99 < order.filled <= leg.qty
            fill = by_venue[leg.venue]
            assert fill.client_order_id == leg.client_order_id
            assert fill.qty == pytest.approx(order.filled)
            assert fill.price == pytest.approx(order.avg_price)
            held = c.account(leg.venue).positions["BTCUSDT"].qty
            assert held == pytest.approx(sign * order.filled)
            last = [p for p in positions if p.venue == leg.venue][-1]
            assert last.qty == pytest.approx(held)
        assert len(of(Fill, intent_id=intent.id)(c.tap.events)) == 2
        # legs rounded to the venues' lots before sending: no dust unwind, nothing refused
        assert not [
            u
            for u in of(OrderUpdate, intent_id=intent.id)(c.tap.events)
            if u.status in ("unwound", "rejected")
        ]


async def test_killed_between_send_and_answer_leaves_one_order(nats_url: str, tmp_path) -> None:
    async with chain(nats_url, tmp_path) as c, Relay(c.sim.url, hold={"bybit"}) as relay:
        ro = c.router_settings(relay.url, order_timeout_s=30.0)
        sig = signal()
        long_cid, short_cid = ids.leg_order_id(sig.id, 0), ids.leg_order_id(sig.id, 1)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            await c.publish(sig)
            await asyncio.wait_for(relay.held.wait(), 30)
            await c.tap.until(of(OrderUpdate, client_order_id=long_cid, status="in_flight"))
            # the simulator holds the order; the router never heard back
            assert len(c.orders("bybit", long_cid)) == 1
        assert not of(Fill, client_order_id=long_cid)(c.tap.events)
        ro.health_port = free_port()
        async with running(router_main.build(ro), ro):
            fill = (await c.tap.until(of(Fill, client_order_id=long_cid)))[0]
            await c.tap.until(of(OrderUpdate, client_order_id=long_cid, status="filled"))
            await c.tap.until(of(Fill, client_order_id=short_cid))
            await asyncio.sleep(1.0)  # the redelivered intent is a no-op
        assert relay.creates == {"bybit": 1, "binance": 1}
        for venue, cid in (("bybit", long_cid), ("binance", short_cid)):
            orders = c.orders(venue, cid)
            assert len(orders) == 1 and orders[0].status == "FILLED"
            assert len(c.account(venue).orders) == 1
            assert len(of(Fill, client_order_id=cid)(c.tap.events)) == 1
        assert fill.qty == pytest.approx(c.orders("bybit", long_cid)[0].filled)
        assert c.account("bybit").positions["BTCUSDT"].qty == pytest.approx(fill.qty)


async def test_leg_rejected_by_the_simulator_is_unwound(nats_url: str, tmp_path) -> None:
    async with chain(nats_url, tmp_path) as c:
        c.account("binance").balance = 10.0  # too little margin for the short leg
        ro = c.router_settings(c.sim.url)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            sig = signal()
            await c.publish(sig)
            decision = (await c.tap.until(of(RiskDecision, signal_id=sig.id)))[0]
            assert decision.approved, decision.reasons
            long_cid, short_cid = ids.leg_order_id(sig.id, 0), ids.leg_order_id(sig.id, 1)
            rejected = (
                await c.tap.until(of(OrderUpdate, client_order_id=short_cid, status="rejected"))
            )[0]
            unwound = (
                await c.tap.until(of(OrderUpdate, client_order_id=long_cid, status="unwound"))
            )[0]
            flat = await c.tap.until(
                lambda ev: [p for p in of(Position, venue="bybit")(ev) if p.qty == 0]
            )
        assert "Margin is insufficient" in rejected.reason
        assert "binance" in unwound.reason and "Margin is insufficient" in unwound.reason
        assert flat
        bybit = c.account("bybit")
        assert bybit.positions["BTCUSDT"].qty == pytest.approx(0.0, abs=1e-12)
        sides = sorted((o.side, o.filled, o.reduce_only) for o in bybit.orders.values())
        assert [s[0] for s in sides] == ["buy", "sell"] and sides[1][2] is True
        assert sides[0][1] == pytest.approx(sides[1][1])
        assert not c.account("binance").orders  # refused before it became an order


async def test_funding_settled_at_the_simulator_reaches_the_ledger(nats_url: str, tmp_path) -> None:
    async with chain(nats_url, tmp_path) as c:
        ro = c.router_settings(c.sim.url)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            sig = signal()
            await c.publish(sig)
            intent = (await c.tap.until(of(OrderIntent, signal_id=sig.id)))[0]
            await c.tap.until(lambda ev: len(of(Fill, intent_id=intent.id)(ev)) >= 2)
            series = c.sim.market.series[("bybit", "BTCUSDT")]
            c.sim.advance((series.next_funding_ms - c.sim.sim_now_ms()) / 1000 + 1)
            payments = await c.tap.until(
                lambda ev: len({p.venue for p in of(FundingPayment)(ev)}) >= 2 and ev
            )
            await asyncio.sleep(1.5)  # more polls: each settlement is booked once
        booked = of(FundingPayment)(c.tap.events)
        assert len(booked) == 2, booked
        for venue in VENUES:
            entries = c.account(venue).funding
            assert len(entries) == 1
            paid = next(p for p in booked if p.venue == venue)
            assert paid.amount_usd == pytest.approx(entries[0].amount, rel=1e-6)
            assert paid.funding_time_ms == entries[0].ts_ms
            assert paid.position_qty == pytest.approx(entries[0].position_qty)
            last = [p for p in of(Position, venue=venue)(c.tap.events)][-1]
            assert last.funding_usd == pytest.approx(entries[0].amount, rel=1e-6)
        assert payments


@pytest.mark.parametrize("venue", ["bybit", "binance", "okx"])
async def test_margin_refusal_is_a_rejection_not_an_unknown_outcome(venue: str) -> None:
    """A refused order does not exist at the venue: it must not be left to a lookup."""
    from hean.config import ServiceSettings
    from hean.venues import build_client
    from hean.venues.base import OrderRejected

    async with SimServer(scenario()) as sim:
        sim.engine.accounts[(venue, KEY)].balance = 1.0
        client = build_client(venue, ServiceSettings(venue_mode="sim", sim_url=sim.url), True)
        try:
            assert await client.round_qty("BTCUSDT", 1e-9) == 0.0  # below the lot: never sent
            lot = await client.round_qty("BTCUSDT", 0.0015385)
            assert 0.0014 < lot <= 0.0015385
            with pytest.raises(OrderRejected):
                await client.create_order("BTCUSDT", "buy", 0.1, "Hmargin0000000000000000000000L00")
            assert client.healthy
        finally:
            await client.close()
        assert not sim.engine.accounts[(venue, KEY)].orders


def test_venue_funding_is_booked_once_and_only_for_our_position() -> None:
    from hean.execution.ledger import Ledger

    t = 1_767_225_600_000
    ledger = Ledger()
    fill = Fill(
        ts_ms=t,
        fill_id="a:1",
        client_order_id="a",
        intent_id="i",
        venue="binance",
        symbol="BTCUSDT",
        side="sell",
        qty=0.5,
        price=100.0,
        fee_usd=0.0,
    )
    ledger.apply_fill(fill)
    # a settlement before the position was opened is someone else's
    assert ledger.book_payment("binance", "BTCUSDT", 3.0, t - 1, t) is None
    payment, pos = ledger.book_payment("binance", "BTCUSDT", 0.005, t + 10, t + 11)
    assert payment.amount_usd == 0.005 and pos.funding_usd == 0.005
    assert payment.rate == pytest.approx(0.0001)  # derived when the venue does not say
    assert payment.position_qty == -0.5
    assert ledger.book_payment("binance", "BTCUSDT", 0.005, t + 10, t + 12) is None
    assert ledger.book_payment("bybit", "BTCUSDT", 0.005, t + 10, t + 12) is None
    assert ledger.totals()["funding_usd"] == 0.005


async def test_spot_hedged_unit_trades_spot_at_the_simulator_and_exits(
    nats_url: str, tmp_path
) -> None:
    """Perp short plus spot long on Binance: the spot leg goes to /api/v3/order as BTC/USDT."""
    async with chain(nats_url, tmp_path) as c:
        ro = c.router_settings(c.sim.url)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            intent, fills = await c.trade(signal(strategy="funding_harvester", legs=SPOT_HEDGE))
            acct = c.account("binance")
            perp_leg, spot_leg = intent.legs
            spot_orders = [
                o for o in acct.spot_orders.values() if o.client_id == spot_leg.client_order_id
            ]
            assert len(spot_orders) == 1 and spot_orders[0].status == "FILLED"
            assert acct.spot["BTCUSDT"] == pytest.approx(spot_orders[0].filled)
            assert acct.positions["BTCUSDT"].qty == pytest.approx(
                -c.orders("binance", perp_leg.client_order_id)[0].filled
            )
            by_instrument = {f.instrument: f for f in fills}
            assert by_instrument["spot"].client_order_id == spot_leg.client_order_id
            assert by_instrument["spot"].price == pytest.approx(spot_orders[0].avg_price)
            assert by_instrument["spot"].fee_usd == pytest.approx(spot_orders[0].fee)
            assert not any(f.paper for f in fills)
            await c.tap.until(of(Position, venue="binance", instrument="spot"))
            # the exit closes both: the spot sell sells what the entry bought
            out = signal(
                strategy="funding_harvester",
                legs=[
                    SignalLeg(venue="binance", symbol="BTCUSDT", side="buy"),
                    SignalLeg(venue="binance", symbol="BTCUSDT", side="sell", instrument="spot"),
                ],
                reduce_only=True,
            )
            exit_intent, _ = await c.trade(out)
        assert acct.spot["BTCUSDT"] == pytest.approx(0.0, abs=1e-9)
        assert acct.positions["BTCUSDT"].qty == pytest.approx(0.0, abs=1e-9)
        assert not [
            u
            for u in of(OrderUpdate)(c.tap.events)
            if u.intent_id in (intent.id, exit_intent.id) and u.status in ("unwound", "rejected")
        ]


async def test_a_spot_holding_missing_from_the_venue_is_flagged_at_restart(
    nats_url: str, tmp_path
) -> None:
    """The ledger holds bought spot; the account holds half of it (the owner moved coins out):
    the restarted router's reconciliation raises a critical alert, and none while it matches."""
    async with chain(nats_url, tmp_path) as c:
        ro = c.router_settings(c.sim.url)
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            await c.trade(signal(strategy="funding_harvester", legs=SPOT_HEDGE))
            await c.tap.until(of(Position, venue="binance", instrument="spot"))
        shortfalls = [a for a in of(Alert)(c.tap.events) if a.key.startswith("spot-shortfall")]
        assert not shortfalls
        acct = c.account("binance")
        bought = acct.spot["BTCUSDT"]
        assert bought > 0
        acct.spot["BTCUSDT"] = bought / 2
        async with running(router_main.build(ro), ro):
            await c.ready(ro)
            alert = (
                await c.tap.until(
                    lambda ev: [
                        a for a in of(Alert)(ev) if a.key == "spot-shortfall:binance:BTCUSDT"
                    ]
                )
            )[0]
        assert alert.severity == "critical" and f"{bought / 2:.6g}"[:4] in alert.text
