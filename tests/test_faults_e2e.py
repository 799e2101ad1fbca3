"""Faults against real processes: the broker dies, services die, a venue goes dark.

Each test counts what the system stored rather than what a subscriber happened to hear: the
JetStream streams (fills, order updates, intents and rejections by client order id or signal
id), the router's book and the risk record in KV, and the simulator's own accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal as signals
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import nats
import pytest

from hean.bus.nats import NatsBus
from hean.bus.stored import read_stored
from hean.config import free_port
from hean.execution import ids
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
from hean_proto.subjects import msg_id_for, stream_for, subject_for
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main
from tests.proc_helpers import HEAN, free_port_range, http_status
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


async def recorded_decisions(url: str) -> list[RiskDecision]:
    """Risk's decisions as stored: rejections in HEAN_DECISIONS, approvals by their intents
    (risk's own protective exits are intents without a signal and are left out)."""
    rejected = [d for d in await stored(url, "hean.risk.decision.*.rejected")]
    approved = [
        RiskDecision(
            ts_ms=i.ts_ms,
            signal_id=i.signal_id,
            strategy=i.strategy,
            symbol=i.symbol,
            approved=True,
            intent_id=i.id,
        )
        for i in await stored(url, "hean.order.approved.>")
        if isinstance(i, OrderIntent) and not ids.is_stop_exit(i.signal_id)
    ]
    return [d for d in rejected if isinstance(d, RiskDecision)] + approved


async def stored(url: str, subject: str) -> list:
    """Every event the stream capturing ``subject`` holds under it, in order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = stream_for(subject).name
        return [e async for e in read_stored(js, stream, subject, idle_timeout_s=1.0)]
    finally:
        await nc.close()


async def until(predicate, timeout: float, what: str, step: float = 0.2):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < end:
        try:
            found = await predicate()
        except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
            last = exc  # not up yet
        else:
            if found:
                return found
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def chain_settings(
    url: str, tmp_path: Path, **common
) -> tuple[risk_main.Settings, router_main.Settings]:
    """risk-killswitch and order-router (paper) as the broker-fault tests run them."""
    common = dict(nats_url=url, state_dir=str(tmp_path), heartbeat_s=5.0, **common)
    rs = risk_main.Settings(
        **common,
        health_port=free_port(),
        risk_token="operator-token",
        max_symbol_exposure_frac=1.0,
        max_gross_exposure_frac=1.0,
        state_publish_s=0.2,
        persist_s=0.5,
    )
    ro = router_main.Settings(
        **common,
        health_port=free_port(),
        venues=["bybit", "binance"],
        risk_max_age_s=3.0,
        leg_fill_timeout_s=1.0,
        lookup_delay_s=0.05,
        stop_grace_s=0.5,
    )
    return rs, ro


async def chain_trading(
    http: httpx.AsyncClient, rs: risk_main.Settings, ro: router_main.Settings
) -> bool:
    """The router has heard risk ACTIVE and risk has fresh books from both venues."""
    r = await http.get(f"http://127.0.0.1:{ro.health_port}/status")
    risk = await http.get(f"http://127.0.0.1:{rs.health_port}/risk/state")
    return r.json()["state"]["risk_state"] == "ACTIVE" and set(
        risk.json()["venues_seen_ms"]
    ) >= set(PRICES)


# ------------------------------------------------------------------------ the broker dies


async def test_nats_sigkill_loses_and_duplicates_nothing(nats_server: NatsServer, tmp_path) -> None:
    url = nats_server.url
    rs, ro = chain_settings(url, tmp_path)
    bus = await NatsBus.connect(url, "test-producer")
    await bus.ensure_streams()
    feeder = asyncio.create_task(books_forever(bus))
    sent: list[Signal] = []
    try:
        async with running(risk_main.build(rs), rs), running(router_main.build(ro), ro):
            async with httpx.AsyncClient() as http:
                await until(lambda: chain_trading(http, rs, ro), 30, "the chain ready to trade")
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

    decisions = await recorded_decisions(url)
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


# ------------------------------------------------------------- services die under `hean up`


def up_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HEAN_NATS_URL", None)
    env.update(
        HEAN_STATE_DIR=str(tmp_path / "state"),
        HEAN_PORT_BASE=str(free_port_range(12)),
        HEAN_UP_NATS_PORT="0",
        HEAN_LIVE="true",  # the router trades at the simulator, through the venue layer
        HEAN_VENUES="bybit,binance",
        HEAN_COLLECT_SYMBOLS="BTCUSDT",
        HEAN_BOOK_POLL_S="1",
        HEAN_PRICE_POLL_S="1",
        HEAN_FUNDING_POLL_S="2",
        HEAN_TICK_S="1",
        HEAN_MAX_DATA_AGE_S="8",
        HEAN_MAX_SYMBOL_EXPOSURE_FRAC="1",
        HEAN_MAX_GROSS_EXPOSURE_FRAC="1",
        HEAN_RISK_TOKEN="operator-token",
        HEAN_STATE_PUBLISH_S="0.5",
        HEAN_PERSIST_S="1",
        HEAN_HEARTBEAT_S="5",
    )
    return env


def read_run(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "run.json").read_text())


def ready(tmp_path: Path, name: str) -> bool:
    port = read_run(tmp_path)["services"][name]["port"]
    return http_status(f"http://127.0.0.1:{port}/readyz") == 200


async def get_json(tmp_path: Path, name: str, path: str) -> dict:
    port = read_run(tmp_path)["services"][name]["port"]
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}{path}", timeout=5)).json()


async def test_each_service_sigkilled_under_hean_up_recovers_and_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    from hean.config import ServiceSettings
    from hean.execution.book import RouterBook
    from hean.registry import SERVICES
    from hean.venues import build_client
    from hean.venues.base import OrderNotFound

    up = subprocess.Popen(
        [*HEAN, "up"], env=up_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    bus: NatsBus | None = None
    names = [s.name for s in SERVICES]
    try:
        await until(
            lambda: _async(all(ready(tmp_path, n) for n in names)), 150, "all services ready", 0.5
        )
        run = read_run(tmp_path)
        nats_url = run["nats_url"]
        sim_url = f"http://127.0.0.1:{run['services']['exchange-sim']['port']}"
        bus = await NatsBus.connect(nats_url, "test-faults")

        async def fresh_data() -> bool:
            risk = await get_json(tmp_path, "risk-killswitch", "/risk/state")
            return set(risk["venues_seen_ms"]) >= {"bybit", "binance"}

        await until(fresh_data, 60, "market data from the simulator at risk-killswitch")
        sent: list[Signal] = []

        async def trade() -> Signal:
            sig = make_signal("up")
            sent.append(sig)
            await publish_until_stored(bus, sig)
            return sig

        async def filled(sig: Signal) -> bool:
            fills = await stored(nats_url, "hean.fill.>")
            intent_id = (await decision(sig)).intent_id
            return len([f for f in fills if f.intent_id == intent_id]) >= 2

        async def decision(sig: Signal) -> RiskDecision:
            async def found():
                got = await recorded_decisions(nats_url)
                return next((d for d in got if d.signal_id == sig.id), None)

            return await until(found, 60, f"a decision on {sig.id}", 0.5)

        first = await trade()
        assert (await decision(first)).approved
        await until(lambda: filled(first), 60, "the first trade filled at the simulator")

        for name in names:
            before_pid = read_run(tmp_path)["services"][name]["pid"]
            risk_before = await get_json(tmp_path, "risk-killswitch", "/risk/state")
            router_before = (await get_json(tmp_path, "order-router", "/status"))["state"]
            os.kill(before_pid, signals.SIGKILL)
            down = await trade()  # published while the service is down
            await until(
                lambda n=name, p=before_pid: _async(
                    read_run(tmp_path)["services"][n]["pid"] not in (None, p)
                ),
                30,
                f"{name} restarted",
            )
            await until(lambda n=name: _async(ready(tmp_path, n)), 60, f"{name} ready again")
            if name == "risk-killswitch":
                # restored from KV: the same state, high-water mark and exposure as before
                risk = await get_json(tmp_path, name, "/risk/state")
                assert risk["state"] == risk_before["state"] == "ACTIVE"
                assert risk["high_water_usd"] == risk_before["high_water_usd"]
                assert risk["exposure_usd"].keys() == risk_before["exposure_usd"].keys()
            if name == "order-router":
                router = (await get_json(tmp_path, name, "/status"))["state"]
                assert router["open_positions"] == router_before["open_positions"] > 0
                assert router["pnl"]["fees_usd"] >= router_before["pnl"]["fees_usd"]
            await decision(down)
            after = await trade()
            d = await decision(after)
            if not d.approved:
                updates = await stored(nats_url, "hean.order.update.>")
                rejected = [(u.venue, u.reason) for u in updates if u.status == "rejected"]
                raise AssertionError(f"after {name}: {d.reasons}; rejected orders: {rejected}")
            await until(lambda s=after: filled(s), 60, f"a trade after {name} came back")
        assert read_run(tmp_path)["services"]["order-router"]["restarts"] == 1

        # ---- accounting: the stream, the router's book and the simulator agree
        await asyncio.sleep(3.0)  # let anything still queued settle
        fills = [f for f in await stored(nats_url, "hean.fill.>") if isinstance(f, Fill)]
        intents = [
            i for i in await stored(nats_url, "hean.order.approved.>") if isinstance(i, OrderIntent)
        ]
        assert Counter(i.id for i in intents) == {i.id: 1 for i in intents}
        per_order = Counter(f.client_order_id for f in fills)
        assert set(per_order.values()) == {1}, per_order  # market orders fill once, never twice
        book = RouterBook.decode(await bus.kv_get("hean_router", "book"))
        settings = ServiceSettings(venue_mode="sim", sim_url=sim_url)
        for venue in ("bybit", "binance"):
            client = build_client(venue, settings, private=True)
            try:
                held = {p.symbol: p.qty for p in await client.fetch_positions()}
                signed = sum(
                    (f.qty if f.side == "buy" else -f.qty) for f in fills if f.venue == venue
                )
                assert held.get("BTCUSDT", 0.0) == pytest.approx(signed, abs=1e-9)
                assert book.ledger.qty(venue, "BTCUSDT") == pytest.approx(signed, abs=1e-9)
                for i in intents:
                    for leg in i.legs:
                        if leg.venue != venue:
                            continue
                        mine = [f for f in fills if f.client_order_id == leg.client_order_id]
                        if mine:
                            at_venue = await client.fetch_order("BTCUSDT", leg.client_order_id)
                            assert at_venue.filled_qty == pytest.approx(mine[0].qty)
                        else:  # refused by the router (fail closed): it never reached the venue
                            with pytest.raises(OrderNotFound):
                                await client.fetch_order("BTCUSDT", leg.client_order_id)
            finally:
                await client.close()

        # ---- no trading on stale data: Binance goes dark, risk refuses its legs
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{sim_url}/sim/event",
                json={"at_s": 0, "kind": "outage", "venue": "binance", "mode": "http_5xx"},
            )
            assert r.status_code == 200, r.text

        async def refused() -> RiskDecision | None:
            d = await decision(await trade())
            return None if d.approved else d

        stale = await until(refused, 60, "a signal refused for stale Binance data", 1.0)
        assert any("binance" in r and ("stale" in r or "no fresh data" in r) for r in stale.reasons)
        assert not [
            i
            for i in await stored(nats_url, "hean.order.approved.>")
            if isinstance(i, OrderIntent) and i.signal_id == stale.signal_id
        ]
    finally:
        if bus is not None:
            await bus.close()
        if up.poll() is None:
            up.send_signal(signals.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


async def _async(value):
    return value
