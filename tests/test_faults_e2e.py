"""Faults against real processes: the broker dies, services die, a venue goes dark.

Each test counts what the system stored rather than what a subscriber happened to hear: the
JetStream streams (fills, order updates and decisions by client order id or signal id), the
router's book and the risk record in KV, and the simulator's own accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from hean.bus.nats import NatsBus
from hean.config import free_port
from hean.execution.store import BookStore
from hean.natsserver import NatsServer
from hean.risk.latch import load_record
from hean_proto import codec
from hean_proto.events import (
    BookLevel,
    BookTop,
    Fill,
    OrderIntent,
    OrderUpdate,
    RiskDecision,
    Signal,
    SignalLeg,
)
from hean_proto.subjects import msg_id_for, subject_for
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main
from tests.service_helpers import running

pytestmark = pytest.mark.e2e

PRICES = {"bybit": 100.0, "binance": 100.2}
_ids = itertools.count()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_signal(prefix: str, **over) -> Signal:
    values = dict(
        ts_ms=now_ms(),
        id=f"{prefix}-{next(_ids)}-{time.time_ns()}",
        strategy="funding_arb",
        symbol="BTCUSDT",
        legs=[
            SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy"),
            SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
        ],
        size_frac=0.005,
        confidence=0.8,
        stop_loss_frac=0.05,
    )
    values.update(over)
    return Signal(**values)


async def publish_until_stored(bus: NatsBus, event, deadline_s: float = 60.0) -> None:
    """Publish with the event's dedupe id until the broker acknowledges it, as producers do."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            await bus.publish(subject_for(event), codec.encode(event), msg_id=msg_id_for(event))
            return
        except Exception:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.2)


async def books_forever(bus: NatsBus) -> None:
    """Fresh books for both venues; publishing through an outage just skips a beat."""
    while True:
        t = now_ms()
        for venue, mid in PRICES.items():
            book = BookTop(
                ts_ms=t,
                venue=venue,
                symbol="BTCUSDT",
                bids=[BookLevel(mid - 0.05, 50.0), BookLevel(mid - 0.15, 500.0)],
                asks=[BookLevel(mid + 0.05, 50.0), BookLevel(mid + 0.15, 500.0)],
            )
            with contextlib.suppress(Exception):
                await bus.publish(subject_for(book), codec.encode(book))
        await asyncio.sleep(0.1)


async def stored(url: str, subject: str) -> list:
    """Every event the HEAN_TRADING stream holds under ``subject``, in order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream="HEAN_TRADING")
        out = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except NatsTimeout:
                break
            for m in msgs:
                out.append(codec.decode(m.data))
                await m.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def until(predicate, timeout: float, what: str, step: float = 0.2):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        found = await predicate()
        if found:
            return found
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------------ the broker dies


async def test_nats_sigkill_loses_and_duplicates_nothing(nats_server: NatsServer, tmp_path) -> None:
    url = nats_server.url
    rs = risk_main.Settings(
        nats_url=url,
        health_port=free_port(),
        state_dir=str(tmp_path),
        risk_token="operator-token",
        max_symbol_exposure_frac=1.0,
        max_gross_exposure_frac=1.0,
        state_publish_s=0.2,
        persist_s=0.5,
        heartbeat_s=5.0,
    )
    ro = router_main.Settings(
        nats_url=url,
        health_port=free_port(),
        state_dir=str(tmp_path),
        venues=["bybit", "binance"],
        risk_max_age_s=3.0,
        leg_fill_timeout_s=1.0,
        lookup_delay_s=0.05,
        stop_grace_s=0.5,
        heartbeat_s=5.0,
    )
    bus = await NatsBus.connect(url, "test-producer")
    await bus.ensure_streams()
    feeder = asyncio.create_task(books_forever(bus))
    sent: list[Signal] = []
    try:
        async with running(risk_main.build(rs), rs), running(router_main.build(ro), ro):
            async with httpx.AsyncClient() as http:

                async def trading() -> bool:
                    r = await http.get(f"http://127.0.0.1:{ro.health_port}/status")
                    risk = await http.get(f"http://127.0.0.1:{rs.health_port}/risk/state")
                    return r.json()["state"]["risk_state"] == "ACTIVE" and set(
                        risk.json()["venues_seen_ms"]
                    ) >= set(PRICES)

                await until(trading, 30, "the chain ready to trade")
                restart: asyncio.Task | None = None
                for i in range(24):
                    if i == 8:
                        nats_server.kill()  # SIGKILL mid-flow, JetStream store left as it was

                        async def later() -> None:
                            await asyncio.sleep(2.0)
                            await asyncio.to_thread(nats_server.start)  # same port and store

                        restart = asyncio.create_task(later())
                    sig = make_signal("nk")
                    sent.append(sig)
                    await publish_until_stored(bus, sig)
                    await asyncio.sleep(0.15)
                assert restart is not None
                await restart

                async def settled() -> bool:
                    fills = await stored(url, "hean.fill.>")
                    return len({f.client_order_id for f in fills}) >= 2 * len(sent)

                await until(settled, 60, "every approved intent filled", step=1.0)
                await asyncio.sleep(1.0)  # anything duplicated late would be stored by now
                for port in (rs.health_port, ro.health_port):
                    r = await http.get(f"http://127.0.0.1:{port}/readyz")
                    assert r.status_code == 200, r.text  # reconnected by themselves
            book = await BookStore(bus).load()
            record = await load_record(bus)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        await bus.close()

    decisions = await stored(url, "hean.risk.decision.>")
    intents = await stored(url, "hean.order.approved.>")
    updates = await stored(url, "hean.order.update.>")
    fills = await stored(url, "hean.fill.>")
    # every signal decided once, every decision an approval with one intent
    per_signal = Counter(d.signal_id for d in decisions if isinstance(d, RiskDecision))
    assert per_signal == {s.id: 1 for s in sent}
    assert all(d.approved for d in decisions), [d.reasons for d in decisions if not d.approved]
    intents = [i for i in intents if isinstance(i, OrderIntent)]
    assert Counter(i.signal_id for i in intents) == {s.id: 1 for s in sent}
    # one fill per leg, one update per order and status: nothing executed twice
    fills = [f for f in fills if isinstance(f, Fill)]
    legs = {leg.client_order_id: leg for i in intents for leg in i.legs}
    assert Counter(f.client_order_id for f in fills) == {cid: 1 for cid in legs}
    for f in fills:
        assert f.qty == pytest.approx(legs[f.client_order_id].qty)
    statuses = Counter((u.client_order_id, u.status) for u in updates if isinstance(u, OrderUpdate))
    assert statuses == {
        **{(cid, "in_flight"): 1 for cid in legs},
        **{(cid, "filled"): 1 for cid in legs},
    }
    # the router's ledger and the risk record agree with what was approved
    expected = {
        "bybit:BTCUSDT": sum(i.legs[0].qty for i in intents),
        "binance:BTCUSDT": -sum(i.legs[1].qty for i in intents),
    }
    assert {k: p.qty for k, p in book.ledger.positions.items()} == pytest.approx(expected)
    assert book.ledger.fills == len(legs)
    assert all(r.status == "done" for r in book.intents.values())
    assert record is not None and record.state == "ACTIVE"
    assert {k: p.qty for k, p in record.positions.items() if p.qty} == pytest.approx(expected)
