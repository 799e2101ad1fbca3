"""Prometheus metrics shared by every service runtime."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    """The runtime's own metrics, on a registry that the service's /metrics endpoint serves."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.service = service
        labels = ["service"]
        self.received = Counter(
            "hean_messages_received_total",
            "Messages received by the service runtime.",
            labels,
            registry=self.registry,
        )
        self.published = Counter(
            "hean_messages_published_total",
            "Events published by the service runtime.",
            labels,
            registry=self.registry,
        )
        self.rejected = Counter(
            "hean_messages_rejected_total",
            "Messages refused (undecodable, invalid, wrong type, oversized, handler error), "
            "each sent to the dead-letter subject.",
            ["service", "reason"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "hean_handler_seconds",
            "Time spent in the logic handler per message.",
            labels,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=self.registry,
        )
        # the children every message touches, looked up once
        self.received_here = self.received.labels(service)
        self.published_here = self.published.labels(service)
        self.handler_here = self.handler_seconds.labels(service)
        self.ready = Gauge(
            "hean_service_ready", "1 when the service is ready.", labels, registry=self.registry
        )
        self.nats_connected = Gauge(
            "hean_nats_connected", "1 while connected to NATS.", labels, registry=self.registry
        )
        self.slow_consumer_drops = Counter(
            "hean_slow_consumer_events_total",
            "Times a subscription fell behind and NATS dropped messages for it.",
            labels,
            registry=self.registry,
        )
        self.pending_messages = Gauge(
            "hean_pending_messages",
            "Messages received but not yet handled (bounded per subscription).",
            labels,
            registry=self.registry,
        )
        self.gc_pause_seconds = Histogram(
            "hean_gc_pause_seconds",
            "Pause of each garbage collection, by generation (2 walks every tracked object).",
            ["service", "generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.gc_frozen_objects = Gauge(
            "hean_gc_frozen_objects",
            "Objects frozen after start-up, out of the collector's reach.",
            labels,
            registry=self.registry,
        )
        self.event_loop = Gauge(
            "hean_event_loop_info",
            "1 for the event loop the service runs on (uvloop or asyncio).",
            ["service", "loop"],
            registry=self.registry,
        )
        self.handled_early = Gauge(
            "hean_messages_handled_early",
            "Durable messages handled from their live copy before the stream stored them "
            "(since start; the stored copy then only confirms them).",
            ["service", "consumer"],
            registry=self.registry,
        )
        self.publish_errors = Counter(
            "hean_publish_errors_total",
            "Publishes that failed (the event is retried or dead-lettered).",
            labels,
            registry=self.registry,
        )

    def counter(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, doc, labels or [], registry=self.registry)

    def gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, doc, labels or [], registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: list[str] | None = None, buckets=None
    ) -> Histogram:
        kwargs = {"buckets": buckets} if buckets else {}
        return Histogram(name, doc, labels or [], registry=self.registry, **kwargs)
