"""A 3-node JetStream cluster on loopback: one node dies mid-run, nothing is lost, it rejoins."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hean.bus.base import Message
from hean.bus.nats import NatsBus
from hean.natsserver import cluster_of
from hean_services.order_router import main as router_main
from hean_services.risk_killswitch import main as risk_main
from tests.service_helpers import running
from tests.test_bus_nats import wait_for
from tests.test_faults_e2e import (
    books_forever,
    chain_settings,
    chain_trading,
    make_signal,
    publish_until_stored,
    recorded_decisions,
    stored,
    until,
)

pytestmark = pytest.mark.e2e


async def _cluster_ready(bus: NatsBus) -> None:
    for _ in range(150):
        try:
            await bus.ensure_streams(replicas=3)
            return
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError("cluster never accepted R3 streams")


async def test_replicated_stream_survives_a_node_kill(tmp_path: Path) -> None:
    nodes = [n.start() for n in cluster_of(tmp_path)]
    try:
        url = ",".join(n.url for n in nodes)
        bus = await NatsBus.connect(url, "cluster-test")
        await _cluster_ready(bus)
        got: list[bytes] = []

        async def h(m: Message) -> None:
            got.append(m.data)

        await bus.subscribe("hean.order.approved.>", h, durable="cluster_test")
        info = await bus.js.stream_info("HEAN_TRADING")
        assert info.config.num_replicas == 3

        total = 60
        for i in range(total):
            if i == 20:
                victim = next(n for n in nodes if n.url != f"nats://{bus.nc.connected_url.netloc}")
                victim.kill()
            payload = f"intent-{i}".encode()
            for _ in range(50):  # a leader election can refuse a publish for a moment
                try:
                    await bus.publish("hean.order.approved.arb", payload, msg_id=f"i{i}")
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"publish {i} never succeeded")
        await wait_for(lambda: len(got) >= total, timeout=60)
        await asyncio.sleep(1)
        # none lost; stored once each (a redelivery after the kill is possible, and consumers
        # are idempotent by client order id, so the stream is what must hold no duplicate)
        assert set(got) == {f"intent-{i}".encode() for i in range(total)}
        stored = await bus.js.stream_info("HEAN_TRADING")
        assert stored.state.messages == total

        victim.start()

        async def rejoined() -> bool:
            info = await bus.js.stream_info("HEAN_TRADING")
            peers = info.cluster.replicas or []
            return len(peers) == 2 and all(p.current and not p.offline for p in peers)

        for _ in range(150):
            if await rejoined():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("killed node did not rejoin as a current replica")
        await bus.close()
    finally:
        for n in nodes:
            n.stop()


async def test_a_bucket_made_with_one_replica_is_raised_to_the_deployments(
    tmp_path: Path,
) -> None:
    """A KV bucket from a single-replica deployment gets the cluster's replicas when a
    service configured for 3 opens it; its entries are kept."""
    nodes = [n.start() for n in cluster_of(tmp_path)]
    try:
        bus = await NatsBus.connect(",".join(n.url for n in nodes), "kv-test")
        await _cluster_ready(bus)
        kv = await bus.js.create_key_value(bucket="hean_router", history=5, replicas=1)
        await kv.put("book", b"before")
        assert (await bus.js.stream_info("KV_hean_router")).config.num_replicas == 1
        assert await bus.kv_get("hean_router", "book") == b"before"  # opened by the bus
        assert (await bus.js.stream_info("KV_hean_router")).config.num_replicas == 3
        await bus.close()
    finally:
        for n in nodes:
            n.stop()


async def test_the_trading_chain_carries_on_when_a_node_dies_and_rejoins(tmp_path: Path) -> None:
    """risk-killswitch and order-router on a 3-node cluster (streams and KV buckets with 3
    replicas): the node leading the router's book is killed while signals keep coming. Every
    signal is decided once, every leg filled once, both services stay ready; the node rejoins."""
    nodes = [n.start() for n in cluster_of(tmp_path / "nats")]
    url = ",".join(n.url for n in nodes)
    rs, ro = chain_settings(url, tmp_path, nats_replicas=3)
    bus = await NatsBus.connect(url, "test-producer")
    feeder: asyncio.Task | None = None
    sent = []
    try:
        await _cluster_ready(bus)
        feeder = asyncio.create_task(books_forever(bus))
        async with (
            running(risk_main.build(rs), rs),
            running(router_main.build(ro), ro),
            httpx.AsyncClient() as http,
        ):
            await until(lambda: chain_trading(http, rs, ro), 60, "the chain ready to trade")
            for bucket in ("hean_risk", "hean_router"):
                info = await bus.js.stream_info(f"KV_{bucket}")
                assert info.config.num_replicas == 3, bucket
            leader = (await bus.js.stream_info("KV_hean_router")).cluster.leader
            victim = next(n for n in nodes if n.server_name == leader)
            alive = next(n for n in nodes if n is not victim)
            for i in range(24):
                if i == 8:
                    victim.kill()
                sig = make_signal("cl")
                sent.append(sig)
                await publish_until_stored(bus, sig)
                await asyncio.sleep(0.15)

            async def settled() -> bool:
                fills = await stored(alive.url, "hean.fill.>")
                return len({f.client_order_id for f in fills}) >= 2 * len(sent)

            await until(settled, 90, "every approved intent filled", step=1.0)
            for port in (rs.health_port, ro.health_port):
                r = await http.get(f"http://127.0.0.1:{port}/readyz")
                assert r.status_code == 200, r.text

            victim.start()

            async def rejoined() -> bool:
                info = await bus.js.stream_info("KV_hean_router")
                peers = info.cluster.replicas or []
                return len(peers) == 2 and all(p.current and not p.offline for p in peers)

            await until(rejoined, 60, "the killed node current again")

        decisions = await recorded_decisions(alive.url)
        assert Counter(d.signal_id for d in decisions) == {s.id: 1 for s in sent}
        assert all(d.approved for d in decisions), [d.reasons for d in decisions]
        intents = [i for i in await stored(alive.url, "hean.order.approved.>")]
        legs = {leg.client_order_id for i in intents for leg in i.legs}
        fills = await stored(alive.url, "hean.fill.>")
        assert Counter(f.client_order_id for f in fills) == {cid: 1 for cid in legs}
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        await bus.close()
        for n in nodes:
            n.stop()
