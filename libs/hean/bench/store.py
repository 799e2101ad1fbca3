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
