"""Throughput of raw nats-py versus the HEAN bus and runtime on the same events."""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats

from hean.bus.nats import NatsBus
from hean.clock import SystemClock
from hean.runtime.core import Runtime
from hean.runtime.logic import Input, ServiceLogic
from hean_proto import codec, subjects
from hean_proto import events as ev


def sample_events(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        event = ev.PriceTick(
            ts_ms=1_767_225_600_000 + i,
            venue="bybit",
            symbol=f"S{i % 500}USDT",
            mark=100.0 + i % 13,
            index=100.0 + i % 11,
        )
        out.append(codec.encode(event))
    return out


async def raw_nats(url: str, payloads: list[bytes]) -> float:
    """Reference: nats-py publish + subscribe, msgspec decode into the typed union.

    Price ticks on core subjects, as in the HEAN run, so no stream storage is measured.
    """
    decoder = msgspec.json.Decoder(ev.AnyEvent)
    nc_pub = await nats.connect(url)
    nc_sub = await nats.connect(url)
    done = asyncio.Event()
    count = 0

    async def cb(msg) -> None:
        nonlocal count
        decoder.decode(msg.data)
        count += 1
        if count == len(payloads):
            done.set()

    await nc_sub.subscribe("bench.raw.>", cb=cb)
    await nc_sub.flush()
    started = time.perf_counter()
    for i, p in enumerate(payloads):
        await nc_pub.publish(f"bench.raw.{i % 500}", p)
    await nc_pub.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await nc_pub.close()
    await nc_sub.close()
    return len(payloads) / elapsed


class _Count(ServiceLogic):
    name = "bench-sink"

    def __init__(self, total: int, done: asyncio.Event) -> None:
        self.total = total
        self.count = 0
        self.done = done

    def inputs(self) -> list[Input]:
        return [Input(subjects.PRICE.pattern(), (ev.PriceTick,))]

    def on_event(self, event: ev.Event, now_ms: int):
        self.count += 1
        if self.count == self.total:
            self.done.set()
        return ()


async def hean_runtime(url: str, payloads: list[bytes]) -> float:
    """The HEAN path: NatsBus publish, Runtime decode + validate + dispatch to logic."""
    pub = await NatsBus.connect(url, "bench-pub")
    sub_bus = await NatsBus.connect(url, "bench-sub")
    done = asyncio.Event()
    logic = _Count(len(payloads), done)
    runtime = Runtime(logic, sub_bus, SystemClock())
    await runtime.start()
    await sub_bus.nc.flush()
    subject = [subjects.PRICE.subject("bybit", f"S{i}USDT") for i in range(500)]
    started = time.perf_counter()
    for i, p in enumerate(payloads):
        await pub.nc.publish(subject[i % 500], p)
    await pub.nc.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await runtime.stop()
    await pub.close()
    await sub_bus.close()
    return len(payloads) / elapsed


async def run(url: str, n: int = 20_000) -> dict:
    payloads = sample_events(n)
    raw = await raw_nats(url, payloads)
    hean = await hean_runtime(url, payloads)
    raw2 = await raw_nats(url, payloads)  # measured on both sides of the HEAN run
    reference = (raw + raw2) / 2
    return {
        "events": n,
        "raw_nats_events_per_s": round(reference),
        "hean_runtime_events_per_s": round(hean),
        "ratio": round(hean / reference, 3),
        "goal_ratio": 0.5,
    }
