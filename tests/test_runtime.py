"""The runtime: logic bound to a real NATS bus; bad messages are dead-lettered, never fatal."""

from __future__ import annotations

import asyncio
import json

import pytest

from hean.bus import InMemoryBus
from hean.bus.base import Message
from hean.bus.nats import NatsBus
from hean.clock import SimClock
from hean.runtime.core import Runtime
from hean.runtime.logic import Input, ServiceLogic
from hean_proto import codec, subjects
from hean_proto import events as ev
from tests.samples import SAMPLES, TS
from tests.test_bus_nats import wait_for


class MarkEcho(ServiceLogic):
    """Turns each funding rate with a mark price into a price tick; fails on a magic rate."""

    name = "echo"

    def inputs(self) -> list[Input]:
        return [Input(subjects.FUNDING.pattern(), (ev.FundingRate,))]

    def on_event(self, event: ev.Event, now_ms: int):
        assert isinstance(event, ev.FundingRate)
        if event.rate == 0.0042:
            raise ValueError("boom")
        yield ev.PriceTick(
            ts_ms=now_ms, venue=event.venue, symbol=event.symbol, mark=event.mark_price or 1.0
        )


def funding(rate: float = 0.0001) -> ev.FundingRate:
    return ev.FundingRate(
        ts_ms=TS, venue="bybit", symbol="BTCUSDT", rate=rate, interval_hours=8, mark_price=100.0
    )


BAD = {
    "garbage": b"\xff\xfe not json",
    "wrong_type": codec.encode(SAMPLES[2]),
    "unknown_tag": b'{"type": "Mystery", "ts_ms": 1}',
    "nan": codec.encode(funding()).replace(b'"rate":0.0001', b'"rate":NaN'),
    "infinite": codec.encode(funding()).replace(b'"mark_price":100.0', b'"mark_price":1e999'),
    "negative_price": codec.encode(funding()).replace(b'"mark_price":100.0', b'"mark_price":-1'),
    "oversized": b'{"type":"FundingRate","pad":"' + b"x" * 300_000 + b'"}',
    "handler_error": codec.encode(funding(0.0042)),
}


async def test_bad_messages_are_dead_lettered_and_the_service_carries_on(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    runtime = Runtime(MarkEcho(), bus, SimClock(TS))
    await runtime.start()
    letters: list[ev.DeadLetter] = []
    ticks: list[ev.PriceTick] = []

    async def on_dlq(m: Message) -> None:
        letters.append(codec.decode_as(m.data, ev.DeadLetter, max_bytes=2**21))

    async def on_tick(m: Message) -> None:
        ticks.append(codec.decode_as(m.data, ev.PriceTick))

    await bus.subscribe(subjects.DEAD_LETTER.pattern(), on_dlq)
    await bus.subscribe(subjects.PRICE.pattern(), on_tick)
    subject = subjects.FUNDING.subject("bybit", "BTCUSDT")
    for payload in BAD.values():
        await bus.publish(subject, payload)
    await bus.publish(subject, codec.encode(funding()))
    await wait_for(lambda: len(letters) == len(BAD) and len(ticks) == 1)

    reasons = [d.reason for d in letters]
    assert "undecodable" in reasons[0]
    assert "wrong event type PriceTick" in reasons[1]
    assert "Mystery" in reasons[2]
    assert "undecodable" in reasons[3]
    assert "$.mark_price" in reasons[5]
    assert "oversized" in reasons[6]
    assert "handler error" in reasons[7] and "boom" in reasons[7]
    for letter, payload in zip(letters, BAD.values(), strict=True):
        assert letter.payload == payload  # kept whole: nothing is lost
        assert letter.payload_size == len(payload)
        assert letter.subject == subject
        assert letter.service == "echo"
    assert ticks[0].mark == 100.0
    samples = runtime.metrics.registry.get_sample_value
    total = sum(
        samples("hean_messages_rejected_total", {"service": "echo", "reason": r}) or 0
        for r in (
            "undecodable_message",
            "invalid_event",
            "wrong_type",
            "oversized_message",
            "handler_error",
        )
    )
    assert total == len(BAD)
    assert samples("hean_messages_received_total", {"service": "echo"}) == len(BAD) + 1
    stored = await bus.js.stream_info("HEAN_DLQ")
    assert stored.state.messages == len(BAD)
    await runtime.stop()
    await bus.close()


async def test_same_logic_runs_on_the_in_memory_bus() -> None:
    bus = InMemoryBus(clock=SimClock(TS))
    runtime = Runtime(MarkEcho(), bus, SimClock(TS))
    await runtime.start()
    await bus.publish(subjects.FUNDING.subject("bybit", "BTCUSDT"), codec.encode(funding()))
    await bus.publish(subjects.FUNDING.subject("bybit", "BTCUSDT"), b"junk")
    await bus.drain()
    kinds = [json.loads(m.data)["type"] if m.data != b"junk" else "junk" for m in bus.published]
    assert kinds == ["FundingRate", "junk", "PriceTick", "DeadLetter"]
    assert runtime.dead_letters == 1


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
async def test_runtime_publishes_every_event_on_its_subject(event: ev.Event) -> None:
    bus = InMemoryBus(clock=SimClock(TS))
    runtime = Runtime(ServiceLogic(), bus, SimClock(TS))
    await runtime.emit([event])
    assert bus.published[-1].subject == subjects.subject_for(event)
    assert codec.decode(bus.published[-1].data) == event


async def test_readiness_includes_the_bus() -> None:
    bus = InMemoryBus()
    runtime = Runtime(ServiceLogic(), bus, SimClock(TS))
    assert runtime.readiness() == {"bus_connected": True}
    await bus.close()
    assert runtime.readiness() == {"bus_connected": False}
    await asyncio.sleep(0)
