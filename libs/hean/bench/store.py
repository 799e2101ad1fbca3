"""How many messages per second one JetStream stream can store on this machine's disk.

The bench's nats-server writes as the deployed one does (``sync_interval: always``: an fsync
per stored message). A stream stores its messages one after another, so one stream takes at
most one message per fsync; separate streams fsync side by side, which is why signals have
their own stream (HEAN_SIGNALS) apart from the intents and the rest of the ledger
(HEAN_TRADING). This figure says how many messages a second each of them can take.
"""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js.api import StorageType, StreamConfig

from hean_proto import subjects

PAYLOAD = b"x" * 400
"""About the size of an encoded signal or intent."""


async def _pipelined(js, streams: int, n: int) -> float:
    started = time.perf_counter()
    acks = [await js.publish_async(f"benchstore{i % streams}.m", PAYLOAD) for i in range(n)]
    await asyncio.gather(*acks)
    return n / (time.perf_counter() - started)


async def run(url: str, n: int = 3000) -> dict:
    """Stored messages per second, all publishes pipelined, into one stream and into two."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for i in range(2):
        config = StreamConfig(
            name=f"BENCHSTORE{i}", subjects=[f"benchstore{i}.>"], storage=StorageType.FILE
        )
        await js.add_stream(config)
    one = await _pipelined(js, 1, n)
    two = await _pipelined(js, 2, n)
    one_again = await _pipelined(js, 1, n)  # on both sides, the disk's load changes
    await nc.close()
    return {
        "messages": n,
        "one_stream_msgs_per_s": round((one + one_again) / 2),
        "two_streams_msgs_per_s": round(two),
    }


PACED_SUBJECTS = (
    subjects.SIGNAL.subject("bench", "BTCUSDT"),
    subjects.ORDER_APPROVED.subject("bench"),
)
"""One subject in each of the streams an approved signal writes to (signals, the ledger's
intents; its decision is recorded by the intent)."""


async def paced_latency(url: str, streams: int, rate: int = 1000, seconds: float = 4.0) -> dict:
    """Publish-to-delivery latency through HEAN's bus at a steady ``rate`` per stream, into
    ``streams`` of the streams an approved signal writes to at once, no service in between:
    how much of a hop's tail the disk alone sets, and how much the streams' fsyncs cost each
    other."""
    import numpy as np

    from hean.bus.nats import NatsBus

    pub = await NatsBus.connect(url, "bench-paced-pub")
    await pub.ensure_streams()
    sub = await NatsBus.connect(url, "bench-paced-sub")
    lat: list[list[float]] = [[] for _ in range(streams)]
    for i in range(streams):

        async def seen(m, i=i) -> None:
            lat[i].append(time.perf_counter() - float(m.data))

        await sub.subscribe(PACED_SUBJECTS[i], seen, durable=f"bench_paced_{i}")
    n = int(rate * seconds)
    started = time.perf_counter()
    for k in range(n):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for i in range(streams):
            stamp = repr(time.perf_counter()).encode()
            await pub.publish(PACED_SUBJECTS[i], stamp, msg_id=f"p{i}-{k}", wait=False)
    deadline = time.perf_counter() + 10
    while sum(map(len, lat)) < n * streams and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await pub.close()
    await sub.close()

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 3) if values else None

    every = [x for per in lat for x in per]
    return {
        "streams": streams,
        "rate_per_stream": rate,
        "sent": n * streams,
        "delivered": len(every),
        "p50_ms": pct(every, 50),
        "p99_ms": pct(every, 99),
        "per_subject_p99_ms": {PACED_SUBJECTS[i]: pct(lat[i], 99) for i in range(streams)},
    }
