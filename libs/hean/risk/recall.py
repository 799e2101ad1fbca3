"""Which signals risk has already decided, read back from the store at start.

A signal whose acknowledgement was lost when risk stopped (a crash, a broker restart) is
delivered again, up to the consumer's ack wait later. A fresh process would decide it a second
time: by then usually rejected as expired, which would store a rejection next to the approval
the first process recorded. The records say what was decided: a rejection in
``HEAN_DECISIONS``, an approval by its intent in ``HEAN_TRADING``. Reading back the recent
ones lets the engine recognise the redelivery as a duplicate.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hean_proto import codec
from hean_proto.events import OrderIntent, RiskDecision
from hean_proto.subjects import ORDER_APPROVED, RISK_DECISION, stream_for

RECORDS = (RISK_DECISION.pattern("*", "rejected"), ORDER_APPROVED.pattern())
"""Where a decision is stored: rejections, and the intents of approvals."""


async def decided_since(js, since_ms: int, *, idle_timeout_s: float = 1.0) -> set[str]:
    """Ids of the signals decided (rejected or approved) at or after ``since_ms``.

    Risk's own exits are intents without a signal of their own and are left out."""
    ids: set[str] = set()
    for subject in RECORDS:
        stream = stream_for(subject)
        assert stream is not None, subject
        async for event in _stored_since(js, stream.name, subject, since_ms, idle_timeout_s):
            exit_intent = isinstance(event, OrderIntent) and event.signal_id.endswith(":exit")
            if isinstance(event, RiskDecision | OrderIntent) and not exit_intent:
                ids.add(event.signal_id)
    return ids


async def _stored_since(js, stream: str, subject: str, since_ms: int, idle_timeout_s: float):
    start = dt.datetime.fromtimestamp(since_ms / 1000, tz=dt.UTC)
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        if (await psub.consumer_info()).num_pending == 0:
            return  # nothing in the window: no fetch to wait out
        while True:
            try:
                msgs = await psub.fetch(1000, timeout=idle_timeout_s)
            except nats.errors.TimeoutError:
                return
            for m in msgs:
                with contextlib.suppress(codec.DecodeError):
                    yield codec.decode(m.data)
            if not msgs or msgs[-1].metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
