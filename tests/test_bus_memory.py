"""The in-memory bus keeps the NATS bus's semantics, deterministically."""

from __future__ import annotations

from hean.bus import InMemoryBus, Message
from hean.clock import SimClock


async def test_delivery_in_publish_order_with_wildcards() -> None:
    bus = InMemoryBus(clock=SimClock(0))
    got: list[str] = []

    async def h(m: Message) -> None:
        got.append(m.subject)

    await bus.subscribe("hean.md.*.bybit.>", h)
    for s in ("hean.md.funding.bybit.BTC", "hean.md.funding.okx.BTC", "hean.md.oi.bybit.ETH"):
        await bus.publish(s, b"{}")
    assert await bus.drain() == 3
    assert got == ["hean.md.funding.bybit.BTC", "hean.md.oi.bybit.ETH"]


async def test_queue_group_members_take_turns() -> None:
    bus = InMemoryBus(clock=SimClock(0))
    a: list[bytes] = []
    b: list[bytes] = []

    async def ha(m: Message) -> None:
        a.append(m.data)

    async def hb(m: Message) -> None:
        b.append(m.data)

    await bus.subscribe("x.>", ha, queue="q")
    await bus.subscribe("x.>", hb, queue="q")
    for i in range(4):
        await bus.publish(f"x.{i}", str(i).encode())
    await bus.drain()
    assert a == [b"0", b"2"] and b == [b"1", b"3"]


async def test_msg_id_dedupe_inside_window_and_durable_resume() -> None:
    clock = SimClock(0)
    bus = InMemoryBus(clock=clock)
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    sub = await bus.subscribe("hean.signal.>", h, durable="risk")
    await bus.publish("hean.signal.s.BTC", b"1", msg_id="a")
    await bus.publish("hean.signal.s.BTC", b"1", msg_id="a")
    await bus.drain()
    assert got == [b"1"]
    await sub.stop()
    await bus.publish("hean.signal.s.BTC", b"2", msg_id="b")
    await bus.drain()
    clock.advance(121_000)
    await bus.publish("hean.signal.s.BTC", b"1", msg_id="a")  # outside the window: stored again
    await bus.subscribe("hean.signal.>", h, durable="risk")
    await bus.drain()
    assert got == [b"1", b"2", b"1"]
    assert len(bus.stream_messages("HEAN_SIGNALS")) == 3


async def test_kv() -> None:
    bus = InMemoryBus()
    assert await bus.kv_get("b", "k") is None
    await bus.kv_put("b", "k", b"v")
    assert await bus.kv_get("b", "k") == b"v"
