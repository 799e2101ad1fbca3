"""An in-memory bus with the NATS bus's semantics, for unit tests and backtests.

Delivery is deterministic: messages are queued on publish and delivered in publish order by
``drain()``, subscriptions in the order they were made, queue-group members in turn. Streams,
``msg_id`` dedupe inside the duplicate window and durable consumers that resume after their
last acknowledged message behave as they do on JetStream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hean.bus.base import ACK_WAIT_S, PULL_BATCH, Bus, Handler, Message, Subscription
from hean.clock import Clock, SystemClock
from hean_proto.subjects import matches, stream_for


@dataclass
class _Sub(Subscription):
    bus: InMemoryBus
    pattern: str
    handler: Handler
    queue: str | None
    durable: str | None
    active: bool = True

    async def stop(self) -> None:
        self.active = False
        self.bus._subs = [s for s in self.bus._subs if s is not self]


@dataclass
class _Stored:
    seq: int
    message: Message
    ts_ms: int


@dataclass
class _Consumer:
    pattern: str
    acked_seq: int = 0


@dataclass
class InMemoryBus(Bus):
    clock: Clock = field(default_factory=SystemClock)
    max_pending: int = 1_000_000

    def __post_init__(self) -> None:
        self._subs: list[_Sub] = []
        self._pending: deque[tuple[Message, int]] = deque()
        self._streams: dict[str, list[_Stored]] = {}
        self._seen_ids: dict[tuple[str, str], int] = {}
        self._consumers: dict[str, _Consumer] = {}
        self._queue_turn: dict[tuple[str, str], int] = {}
        self._kv: dict[tuple[str, str], bytes] = {}
        self._seq = 0
        self._closed = False
        self.published: list[Message] = []

    @property
    def connected(self) -> bool:
        return not self._closed

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        if self._closed:
            raise ConnectionError("bus closed")
        hdrs = dict(headers or {})
        spec = stream_for(subject)
        seq = 0
        if spec is not None:
            now = self.clock.now_ms()
            if msg_id is not None:
                hdrs["Nats-Msg-Id"] = msg_id
                key = (spec.name, msg_id)
                seen = self._seen_ids.get(key)
                duplicate = seen is not None and now - seen < spec.duplicate_window_s * 1000
            else:
                duplicate = False
            if not duplicate:
                # as on JetStream: a duplicate is not stored, but plain subscribers still see it
                if msg_id is not None:
                    self._seen_ids[(spec.name, msg_id)] = now
                self._seq += 1
                seq = self._seq
                self._streams.setdefault(spec.name, []).append(
                    _Stored(seq, Message(subject, data, hdrs), now)
                )
        if len(self._pending) >= self.max_pending:
            raise OverflowError(f"in-memory bus backlog above {self.max_pending}")
        message = Message(subject, data, hdrs)
        self.published.append(message)
        self._pending.append((message, seq))

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        durable: str | None = None,
        early: bool = False,  # one delivery here: stored and live are the same moment
        ack_wait_s: float = ACK_WAIT_S,  # nothing is redelivered in one process
        batch: int = PULL_BATCH,
    ) -> Subscription:
        sub = _Sub(self, pattern, handler, queue, durable)
        self._subs.append(sub)
        if durable is not None:
            consumer = self._consumers.setdefault(durable, _Consumer(pattern))
            backlog = [
                stored
                for stream in self._streams.values()
                for stored in stream
                if stored.seq > consumer.acked_seq and matches(pattern, stored.message.subject)
            ]
            for stored in sorted(backlog, key=lambda s: s.seq):
                await self._deliver_durable(sub, stored.message, stored.seq)
        return sub

    async def _deliver_durable(self, sub: _Sub, message: Message, seq: int) -> None:
        consumer = self._consumers[sub.durable or ""]
        if seq <= consumer.acked_seq:
            return
        await sub.handler(message)
        consumer.acked_seq = seq

    async def drain(self, max_messages: int | None = None) -> int:
        """Deliver queued messages (including those published meanwhile); returns the count."""
        delivered = 0
        while self._pending and (max_messages is None or delivered < max_messages):
            message, seq = self._pending.popleft()
            delivered += 1
            groups_done: set[str] = set()
            for sub in list(self._subs):
                if not sub.active or not matches(sub.pattern, message.subject):
                    continue
                if sub.queue is not None:
                    if sub.queue in groups_done:
                        continue
                    groups_done.add(sub.queue)
                    members = [
                        s
                        for s in self._subs
                        if s.queue == sub.queue and s.active and matches(s.pattern, message.subject)
                    ]
                    turn_key = (sub.queue, sub.pattern)
                    turn = self._queue_turn.get(turn_key, 0)
                    self._queue_turn[turn_key] = turn + 1
                    sub = members[turn % len(members)]
                if sub.durable is not None:
                    if seq > 0:
                        await self._deliver_durable(sub, message, seq)
                else:
                    await sub.handler(message)
        return delivered

    def stream_messages(self, stream: str) -> list[Message]:
        return [s.message for s in self._streams.get(stream, [])]

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        return self._kv.get((bucket, key))

    async def kv_put(self, bucket: str, key: str, value: bytes) -> None:
        self._kv[(bucket, key)] = value

    async def close(self) -> None:
        self._closed = True
        self._subs.clear()
