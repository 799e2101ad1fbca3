"""Fans alerts out to every configured channel, each behind its own queue and worker.

A channel that is down, slow or refusing never delays the others: an alert is gated
(dedupe, rate limit) and queued per channel, and each worker retries with backoff on its own.
A permanent failure (4xx, bad credentials) is not retried; every outcome is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from hean.alerts.channels import Channel, DeliveryError
from hean.alerts.policy import AlertGate, Backoff
from hean_proto.events import Alert

log = logging.getLogger("hean.alerts")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.sent = Counter(
            "hean_alerts_sent_total", "Alerts delivered, per channel.", ["channel"], registry=reg
        )
        self.failed = Counter(
            "hean_alerts_failed_total",
            "Alerts given up on after retries or a permanent error, per channel.",
            ["channel"],
            registry=reg,
        )
        self.suppressed = Counter(
            "hean_alerts_suppressed_total",
            "Alerts not sent because they were duplicates, rate limited or the queue was full.",
            ["channel", "reason"],
            registry=reg,
        )
        self.attempts = Counter(
            "hean_alert_delivery_attempts_total",
            "Delivery attempts including retries, per channel and outcome.",
            ["channel", "outcome"],
            registry=reg,
        )


@dataclass
class _Lane:
    channel: Channel
    gate: AlertGate
    queue: asyncio.Queue
    task: asyncio.Task | None = None
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class AlertDispatcher:
    def __init__(
        self,
        channels: list[Channel],
        *,
        gate: Callable[[], AlertGate] = AlertGate,
        backoff: Backoff | None = None,
        now_ms: Callable[[], int] = _wall_ms,
        queue_size: int = 1000,
        max_age_ms: int = 6 * 3_600_000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.max_age_ms = max_age_ms
        self.backoff = backoff or Backoff()
        self.now_ms = now_ms
        self.metrics = AlertMetrics(registry)
        self.lanes = {
            ch.name: _Lane(ch, gate(), asyncio.Queue(maxsize=queue_size)) for ch in channels
        }

    async def start(self) -> None:
        for lane in self.lanes.values():
            if lane.task is None:
                lane.task = asyncio.create_task(
                    self._worker(lane), name=f"alert:{lane.channel.name}"
                )

    def submit(self, alert: Alert) -> dict[str, str]:
        """Gate and queue an alert on every channel; never waits on a channel."""
        outcome: dict[str, str] = {}
        now = self.now_ms()
        expired = now - alert.ts_ms > self.max_age_ms
        for name, lane in self.lanes.items():
            # a consumer created late replays the stream: old alerts are news no longer
            decision = "expired" if expired else lane.gate.decide(alert, now)
            if decision == "send":
                try:
                    lane.queue.put_nowait(alert)
                except asyncio.QueueFull:
                    decision = "queue_full"
            if decision != "send":
                self.metrics.suppressed.labels(name, decision).inc()
            outcome[name] = decision
        return outcome

    async def _deliver(self, lane: _Lane, alert: Alert) -> bool:
        name = lane.channel.name
        delays = self.backoff.delays()
        for attempt in range(len(delays) + 1):
            try:
                await lane.channel.send(alert)
            except DeliveryError as exc:
                self.metrics.attempts.labels(name, "error").inc()
                if exc.permanent or attempt >= len(delays):
                    log.error("alert %s not delivered to %s: %s", alert.key, name, exc)
                    return False
                log.warning("alert %s to %s failed (%s); retrying", alert.key, name, exc)
                await asyncio.sleep(delays[attempt])
            except Exception as exc:  # a channel bug must not kill its worker
                self.metrics.attempts.labels(name, "error").inc()
                log.exception("alert %s to %s: unexpected error", alert.key, name)
                if attempt >= len(delays):
                    return False
                await asyncio.sleep(delays[attempt])
                del exc
            else:
                self.metrics.attempts.labels(name, "ok").inc()
                return True
        return False

    async def _worker(self, lane: _Lane) -> None:
        while True:
            alert = await lane.queue.get()
            try:
                ok = await self._deliver(lane, alert)
                if ok:
                    lane.sent.append(alert.key)
                    self.metrics.sent.labels(lane.channel.name).inc()
                else:
                    lane.failed.append(alert.key)
                    self.metrics.failed.labels(lane.channel.name).inc()
            finally:
                lane.queue.task_done()

    async def join(self) -> None:
        """Wait until every queued alert was delivered or given up on."""
        for lane in self.lanes.values():
            await lane.queue.join()

    def status(self) -> dict[str, dict[str, int]]:
        return {
            name: {"sent": len(lane.sent), "failed": len(lane.failed), "queued": lane.queue.qsize()}
            for name, lane in self.lanes.items()
        }

    async def close(self) -> None:
        for lane in self.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.task
                lane.task = None
            with contextlib.suppress(Exception):
                await lane.channel.close()
