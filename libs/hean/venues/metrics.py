"""Prometheus metrics of venue access: calls by outcome, rejected data, health."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class VenueMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter(
            "hean_venue_calls_total",
            "Venue API calls by outcome (ok, retried, failed).",
            ["venue", "endpoint", "outcome"],
            registry=self.registry,
        )
        self.bad_data = Counter(
            "hean_venue_bad_data_total",
            "Items of venue answers rejected as data (missing, non-numeric, out of range).",
            ["venue", "endpoint", "field"],
            registry=self.registry,
        )
        self.healthy = Gauge(
            "hean_venue_healthy",
            "1 while the venue answers, 0 after repeated failures.",
            ["venue"],
            registry=self.registry,
        )
