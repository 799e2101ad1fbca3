"""Which signals risk has already decided, read back from the store at start.

A signal whose acknowledgement was lost when risk stopped (a crash, a broker restart) is
delivered again, up to the consumer's ack wait later. A fresh process would decide it a second
time: by then usually rejected as expired, which would store a rejection next to the approval
the first process recorded. The records say what was decided: a rejection in
``HEAN_DECISIONS``, an approval by its intent in ``HEAN_TRADING``. Reading back the recent
ones lets the engine recognise the redelivery as a duplicate.
"""

from __future__ import annotations

from hean.bus.stored import read_stored
from hean.execution.ids import is_stop_exit
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
        stored = read_stored(
            js, stream.name, subject, since_ms=since_ms, idle_timeout_s=idle_timeout_s
        )
        async for event in stored:
            if isinstance(event, RiskDecision | OrderIntent) and not is_stop_exit(event.signal_id):
                ids.add(event.signal_id)
    return ids
