"""Reading what a stream holds, in order, without a durable consumer.

Start-up recovery (a predictor's bars, risk's recent decisions) and the history tools read a
stream's messages once: an ephemeral pull consumer that acknowledges nothing, asked in
batches until the server says none are left. Its pending count is computed when it is
created, so an empty selection costs no wait.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hean_proto import codec
from hean_proto.events import Event


async def read_stored(
    js,
    stream: str,
    subject: str,
    *,
    since_ms: int | None = None,
    idle_timeout_s: float = 5.0,
    batch: int = 1000,
) -> AsyncIterator[Event]:
    """Every decodable event ``stream`` holds under ``subject``, in stream order; with
    ``since_ms``, only those the stream stored at or after that time."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=10.0)
    if since_ms is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = dt.datetime.fromtimestamp(since_ms / 1000, tz=dt.UTC)
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    consumer = await psub.consumer_info()
    try:
        if consumer.num_pending == 0:
            return
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=idle_timeout_s)
            except nats.errors.TimeoutError:
                return
            for m in msgs:
                with contextlib.suppress(codec.DecodeError):
                    yield codec.decode(m.data)
            if not msgs or msgs[-1].metadata.num_pending == 0:
                return
    finally:
        # gone at once rather than after its inactivity threshold: readers that poll would
        # otherwise leave a consumer per call on the stream
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, consumer.name)
