"""Binds a ServiceLogic to a Bus: decode, validate, dispatch, publish, dead-letter.

The same binding runs over NATS in a live service and over the in-memory bus in tests and
backtests. A message that cannot be accepted (garbage, wrong type, invalid values, oversized,
or a handler that raises) is counted, logged with a clear reason and published whole to
``hean.dlq.<service>``; the service carries on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from hean.bus.base import Bus, Message, Subscription
from hean.clock import Clock
from hean.runtime.logic import Output, Publish, ServiceLogic
from hean.runtime.metrics import RuntimeMetrics
from hean_proto import codec
from hean_proto.events import DeadLetter, Event
from hean_proto.subjects import DEAD_LETTER, msg_id_for, subject_for

log = logging.getLogger("hean.runtime")

DLQ_MAX_PAYLOAD = 512 * 1024


class Runtime:
    """One service's logic on one bus."""

    def __init__(
        self,
        logic: ServiceLogic,
        bus: Bus,
        clock: Clock,
        metrics: RuntimeMetrics | None = None,
        *,
        max_event_bytes: int = codec.MAX_EVENT_BYTES,
    ) -> None:
        self.logic = logic
        self.bus = bus
        self.clock = clock
        self.metrics = metrics or RuntimeMetrics(logic.name)
        self.max_event_bytes = max_event_bytes
        self._subs: list[Subscription] = []
        self.dead_letters = 0

    async def start(self) -> None:
        for spec in self.logic.inputs():
            handler = self._make_handler(spec.kinds)
            sub = await self.bus.subscribe(
                spec.pattern,
                handler,
                queue=spec.queue,
                durable=spec.durable,
                early=spec.early,
                ack_wait_s=spec.ack_wait_s,
                batch=spec.batch,
            )
            self._subs.append(sub)

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()

    def _make_handler(self, kinds: tuple[type[Event], ...]):
        # Outputs are pipelined; for a durable input the bus acknowledges the input only once
        # they are stored, so a crash redelivers the input rather than losing an output.
        async def handle(message: Message) -> None:
            m = self.metrics
            m.received_here.inc()
            try:
                event = codec.decode(message.data, self.max_event_bytes)
            except codec.DecodeError as exc:
                reason = str(exc)
                kind = reason.split(":", 1)[0].replace(" ", "_")
                await self.dead_letter(message, reason, kind)
                return
            if kinds and not isinstance(event, kinds):
                await self.dead_letter(
                    message,
                    f"wrong event type {type(event).__name__} on {message.subject}; "
                    f"expected {', '.join(k.__name__ for k in kinds)}",
                    "wrong_type",
                )
                return
            started = time.perf_counter()
            try:
                outputs = list(self.logic.on_event(event, self.clock.now_ms()))
            except Exception as exc:
                log.exception("handler error on %s", message.subject)
                await self.dead_letter(message, f"handler error: {exc!r}", "handler_error")
                return
            finally:
                m.handler_here.observe(time.perf_counter() - started)
            await self.emit(outputs, wait=False)

        return handle

    async def emit(self, outputs: Iterable[Output], *, wait: bool = True) -> None:
        """Publish what the logic returned, each on its derived subject."""
        for out in outputs:
            if isinstance(out, Publish):
                event, subject = out.event, out.subject
            else:
                event, subject = out, subject_for(out)
            await self.bus.publish(
                subject, codec.encode(event), msg_id=msg_id_for(event), wait=wait
            )
            self.metrics.published_here.inc()

    async def tick(self) -> None:
        try:
            outputs = list(self.logic.on_tick(self.clock.now_ms()))
        except Exception:
            log.exception("tick error in %s", self.logic.name)
            return
        await self.emit(outputs)

    async def dead_letter(self, message: Message, reason: str, kind: str) -> None:
        self.dead_letters += 1
        self.metrics.rejected.labels(self.metrics.service, kind).inc()
        log.warning(
            "rejected message on %s: %s",
            message.subject,
            reason,
            extra={"subject": message.subject, "reason": reason},
        )
        payload = message.data
        truncated = len(payload) > DLQ_MAX_PAYLOAD
        letter = DeadLetter(
            ts_ms=self.clock.now_ms(),
            service=self.logic.name,
            subject=message.subject,
            reason=reason[:2000],
            payload=payload[:DLQ_MAX_PAYLOAD],
            payload_size=len(payload),
            truncated=truncated,
        )
        try:
            await self.bus.publish(DEAD_LETTER.subject(self.logic.name), codec.encode(letter))
        except Exception:
            log.exception("could not publish dead letter for %s", message.subject)

    def readiness(self) -> dict[str, bool]:
        conditions = {"bus_connected": self.bus.connected}
        conditions.update(self.logic.readiness(self.clock.now_ms()))
        return conditions
