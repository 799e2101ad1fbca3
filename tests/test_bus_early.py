"""A durable consumer that handles each message from its live copy (``hean.bus.early``),
against a real nats-server: once per message, the stored copy acknowledged only once what the
handling published is stored, a backlog taken from the store first, and the store taking over
whenever the live copy fails or may have been missed."""

from __future__ import annotations

import asyncio

import pytest

from hean.bus.base import Message
from hean.bus.early import EarlyCopies
from hean.bus.nats import NatsBus
from hean.natsserver import NatsServer
from tests.test_bus_nats import wait_for

SUBJECT = "hean.signal.s.BTC"


async def _bus(url: str) -> NatsBus:
    bus = await NatsBus.connect(url, "test")
    await bus.ensure_streams()
    return bus


async def _consumer(bus: NatsBus, durable: str):
    return await bus.js.consumer_info("HEAN_SIGNALS", durable)


async def _acknowledged(bus: NatsBus, durable: str, seq: int) -> None:
    """Wait until the consumer's acknowledgements reach stream sequence ``seq``."""
    for _ in range(300):
        c = await _consumer(bus, durable)
        if c.num_ack_pending == 0 and c.ack_floor.stream_seq == seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{durable}: stored copies not acknowledged up to {seq}")


async def _caught_up(sub) -> None:
    await wait_for(lambda: sub.early.caught_up)


async def test_each_message_is_handled_once_from_its_live_copy(nats_url: str) -> None:
    bus = await _bus(nats_url)
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    sub = await bus.subscribe("hean.signal.>", h, durable="early_once", early=True)
    await _caught_up(sub)
    for i in range(50):
        await bus.publish(SUBJECT, str(i).encode(), msg_id=f"s-{i}", wait=False)
    await bus.flush()
    await wait_for(lambda: len(got) == 50)
    await _acknowledged(bus, "early_once", 50)
    await asyncio.sleep(0.3)  # nothing is handled a second time from the store
    assert got == [str(i).encode() for i in range(50)]
    assert bus.early_counts() == {"early_once": 50}
    assert sub.early.confirmed_by_store == 50
    await bus.close()


async def test_a_backlog_is_handled_from_the_store_first(nats_url: str) -> None:
    """Messages stored while the consumer was away come first and in order; live copies are
    used only once it has caught up."""
    bus = await _bus(nats_url)
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    for i in range(200):
        await bus.publish(SUBJECT, f"old-{i}".encode(), msg_id=f"old-{i}", wait=False)
    await bus.flush()
    sub = await bus.subscribe("hean.signal.>", h, durable="early_backlog", early=True)
    for i in range(50):
        await bus.publish(SUBJECT, f"new-{i}".encode(), msg_id=f"new-{i}", wait=False)
    await bus.flush()
    await wait_for(lambda: len(got) >= 250)
    await asyncio.sleep(0.3)
    assert got[:200] == [f"old-{i}".encode() for i in range(200)]
    assert sorted(got[200:]) == sorted(f"new-{i}".encode() for i in range(50))
    assert len(got) == 250
    # the live copies that arrived during the backlog were left to the store
    assert sub.early.handled_early < 50
    await _caught_up(sub)
    early_before = sub.early.handled_early
    await bus.publish(SUBJECT, b"live", msg_id="live-1")
    await wait_for(lambda: got[-1] == b"live")
    assert sub.early.handled_early == early_before + 1  # caught up: from its live copy
    await _acknowledged(bus, "early_backlog", 251)
    await bus.close()


async def test_a_failed_live_copy_is_handled_again_from_the_store(nats_url: str) -> None:
    bus = await _bus(nats_url)
    calls: list[bytes] = []

    async def flaky(m: Message) -> None:
        calls.append(m.data)
        if len(calls) == 1:
            raise RuntimeError("transient")

    sub = await bus.subscribe("hean.signal.>", flaky, durable="early_fail", early=True)
    await _caught_up(sub)
    await bus.publish(SUBJECT, b"x", msg_id="x-1")
    await wait_for(lambda: len(calls) == 2)
    assert sub.early.handled_early == 1 and sub.early.confirmed_by_store == 0
    await bus.flush()
    await asyncio.sleep(0.3)
    c = await _consumer(bus, "early_fail")
    assert (c.num_ack_pending, c.num_redelivered, len(calls)) == (0, 0, 2)
    await bus.close()


async def test_the_stored_copy_waits_for_the_live_handlings_output(nats_url: str) -> None:
    """What the early handling published is not stored yet: the stored copy stays
    unacknowledged (a crash would redeliver it) until the output's retry stores it."""
    bus = await _bus(nats_url)
    await bus.js.delete_stream("HEAN_ALERTS")
    handled: list[bytes] = []

    async def relay(m: Message) -> None:
        handled.append(m.data)
        await bus.publish("hean.alert.test", m.data, msg_id="alert-1", wait=False)

    sub = await bus.subscribe("hean.signal.>", relay, durable="early_store", early=True)
    await _caught_up(sub)
    await bus.publish(SUBJECT, b"in", msg_id="in-1")
    await wait_for(lambda: sub.early.confirmed_by_store == 1)
    c = await _consumer(bus, "early_store")
    assert c.num_ack_pending == 1
    assert sub.early.handled_early == 1

    await bus.ensure_streams()
    await bus.flush(timeout_s=30)
    assert (await bus.js.stream_info("HEAN_ALERTS")).state.messages == 1
    c = await _consumer(bus, "early_store")
    assert (c.num_ack_pending, c.num_redelivered) == (0, 0)
    assert handled == [b"in"]
    await bus.close()


async def test_a_server_restart_pauses_live_copies_until_caught_up(
    nats_server: NatsServer,
) -> None:
    bus = await _bus(nats_server.url)
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    sub = await bus.subscribe("hean.signal.>", h, durable="early_restart", early=True)
    await _caught_up(sub)
    await bus.publish(SUBJECT, b"before", msg_id="b-1")
    await wait_for(lambda: got == [b"before"])
    await _acknowledged(bus, "early_restart", 1)
    nats_server.kill()
    await wait_for(lambda: not bus.connected)
    assert not sub.early.caught_up  # live copies may be missed while away
    nats_server.start()
    await wait_for(lambda: bus.connected, timeout=30)
    await bus.publish(SUBJECT, b"after", msg_id="a-1")
    # a broker killed with SIGKILL may redeliver what was acknowledged just before (its
    # consumer state is written lazily): at least once, and the services drop what they
    # decided already
    await wait_for(lambda: b"after" in got, timeout=30)
    await _caught_up(sub)
    early_before = sub.early.handled_early
    await bus.publish(SUBJECT, b"live", msg_id="l-1")
    await wait_for(lambda: got[-1:] == [b"live"], timeout=30)
    await asyncio.sleep(0.3)
    assert [g for g in got if g != b"before"] == [b"after", b"live"]
    assert got.index(b"after") > max(i for i, g in enumerate(got) if g == b"before")
    assert sub.early.handled_early == early_before + 1
    await bus.close()


async def test_early_handling_refuses_a_queue_group(nats_url: str) -> None:
    bus = await _bus(nats_url)

    async def h(m: Message) -> None:
        return None

    with pytest.raises(ValueError, match="single instance"):
        await bus.subscribe("hean.signal.>", h, durable="q", queue="q", early=True)
    await bus.close()


async def test_the_key_memory_is_bounded() -> None:
    copies = EarlyCopies(limit=3)
    copies.caught_up = True
    claimed = [copies.claim(f"k{i}") for i in range(5)]
    assert all(c is not None for c in claimed)
    assert len(copies) == 3
    assert copies.take("k0") is None  # forgotten: handled again from the store
    assert copies.take("k4") is claimed[4]
    assert copies.claim("k4") is None  # a late live copy of a stored message is dropped
    assert copies.claim(None) is None
    copies.caught_up = False
    assert copies.claim("k9") is None
